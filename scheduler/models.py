import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator, URLValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

# E.164: a plus, a country code not starting with 0, at most 15 digits in all. [0-9], not \d: in Python \d is
# any Unicode digit (Arabic-Indic, full-width), which no provider dials.
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
validate_e164 = RegexValidator(E164_PATTERN, "Enter a phone number in E.164 format, e.g. +6281234567890.")
validate_webhook_url = URLValidator(schemes=["http", "https"])
MAX_INTERVAL_SECONDS = 24 * 3600


class OutboundMessage(models.Model):
    """One message to send once through the tenant's delivery webhook.

    The id is a UUID: it is also the `Idempotency-Key` the receiver de-duplicates by, and it must not
    collide with another tenant's message sent to the same provider.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    to = models.CharField(max_length=16, validators=[validate_e164])
    content = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Requests made to the webhook for this message.")
    next_attempt_at = models.DateTimeField(default=timezone.now, help_text="A pending message is due from then on.")
    # A claim: the run holding a `sending` message, and until when. Past the lease, another run takes it over.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=255, null=True, blank=True, help_text="The provider's messageId.")
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["created_at", "id"], name="outbound_created_idx"),
            models.Index(fields=["status", "created_at", "id"], name="outbound_status_created_idx"),
            # The claim query: due pending messages, oldest first.
            models.Index(
                fields=["created_at", "id"], condition=Q(status="pending"), name="outbound_pending_idx"
            ),
            # Lease recovery: claimed messages whose run may have died.
            models.Index(fields=["lease_expires_at"], condition=Q(status="sending"), name="outbound_sending_lease_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "sending", "sent", "failed"]), name="outbound_status_valid"
            ),
            models.CheckConstraint(condition=~Q(content=""), name="outbound_content_not_empty"),
            models.CheckConstraint(
                condition=~Q(status="sending") | Q(claim_token__isnull=False, lease_expires_at__isnull=False),
                name="outbound_sending_has_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.to} ({self.status})"


def _default_interval_seconds() -> int:
    return settings.OUTBOUND_INTERVAL_SECONDS


def _default_batch_size() -> int:
    return settings.OUTBOUND_BATCH_SIZE


def _default_webhook_url() -> str:
    return settings.OUTBOUND_WEBHOOK_URL


def _default_auth_key() -> str:
    return settings.OUTBOUND_AUTH_KEY


def validate_batch_size(value: int) -> None:
    # The maximum is a setting (it depends on the HTTP timeout), so it cannot be a fixed MaxValueValidator.
    MaxValueValidator(settings.OUTBOUND_BATCH_SIZE_MAX)(value)


class SchedulerSetting(models.Model):
    """The tenant's outbound scheduler: one row per tenant schema (pk 1).

    This row is what a run reads; the tenant's `outbound` mark in the due-work index (public schema,
    tenants.work) is kept in line with it by scheduler.services, in the same transaction. No beat entry.
    """

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    running = models.BooleanField(default=True)
    interval_seconds = models.PositiveIntegerField(
        default=_default_interval_seconds, validators=[MinValueValidator(1), MaxValueValidator(MAX_INTERVAL_SECONDS)]
    )
    batch_size = models.PositiveSmallIntegerField(
        default=_default_batch_size, validators=[MinValueValidator(1), validate_batch_size]
    )
    webhook_url = models.CharField(
        max_length=2000, blank=True, default=_default_webhook_url, validators=[validate_webhook_url]
    )
    auth_key = models.CharField(max_length=255, blank=True, default=_default_auth_key, help_text="Sent as x-ins-auth-key.")
    # When the current schedule began (creation, the last start, the last interval change): the first run
    # time is one interval after it until the job has run since (scheduler.selectors.scheduler_next_run_at).
    schedule_anchor_at = models.DateTimeField(default=timezone.now)
    last_run_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="scheduler_setting_singleton")]

    def __str__(self) -> str:
        return "Outbound scheduler (running)" if self.running else "Outbound scheduler (stopped)"
