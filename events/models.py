"""The tenant's event outbox and its outgoing webhooks (PRODUCT.md, "Events: outgoing webhooks")."""

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from conversations.models import Application


class Event(models.Model):
    """One thing that happened in the tenant, written in the same transaction as the change (the outbox).

    The bigint id is the order events happened in: an event of a chat is written while its change holds the
    chat's row lock, so a later event of the same chat always gets a larger id. `public_id` is the `evt_`
    id receivers see (the `webhook-id`).
    """

    id = models.BigAutoField(primary_key=True)
    public_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    data = models.JSONField()
    # Facts the fan-out filters on, kept beside the data; no foreign keys: an event outlives its rows.
    application_id = models.BigIntegerField(null=True, blank=True)
    chat_id = models.BigIntegerField(null=True, blank=True, help_text="Orders delivery: one chat's events in order.")
    is_private = models.BooleanField(default=False)
    # What made it, for changes a retry may write twice (a drain batch re-run after a crash): one event each.
    source_key = models.CharField(max_length=100, unique=True, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["created_at"], name="event_created_idx")]

    def __str__(self) -> str:
        return f"{self.type} evt_{self.public_id}"

    @property
    def webhook_id(self) -> str:
        return f"evt_{self.public_id}"


class WebhookEndpoint(models.Model):
    """A URL the tenant's events are POSTed to, signed with its secret (Standard Webhooks)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.CharField(max_length=2000)
    events = ArrayField(models.CharField(max_length=64), help_text='Event types, or ["*"] for every type.')
    # Only this application's events when set; deleting the application deletes the endpoint (never widens it).
    application = models.ForeignKey(Application, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    description = models.CharField(max_length=500, blank=True, default="")
    include_private = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    secret = models.CharField(max_length=100, editable=False)
    # After a rotation the old secret signs too (a second signature) until this time.
    previous_secret = models.CharField(max_length=100, null=True, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The last rotation: another within EVENTS_SECRET_ROTATION_MIN_INTERVAL_SECONDS is refused (a double submit
    # would otherwise make the first new secret, not the deployed one, the one that still signs).
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Since when every delivery attempt failed (None: the last one succeeded); 24 h of that deactivates it.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    deactivated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url


# A partial index's condition as two equalities, not IN: PostgreSQL prints an IN's array with casts that a
# schema copy (tenants.schemas) re-reads differently, and the copy must equal a migrated schema's catalog.
_UNFINISHED = Q(status="pending") | Q(status="failed")


class Delivery(models.Model):
    """One event to one endpoint: its status, attempts and, while a run sends it, the run's claim.

    `pending` (not tried yet) and `failed` (tried, a retry is due at `next_attempt_at`) are unfinished: they
    hold back later events of the same chat to the same endpoint. `succeeded` and `dead` are final.
    A run's claim does not change the status: it sets `claim_token` and `lease_expires_at`; past the lease
    (the run died) the delivery is due again with the same `webhook-id`.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (retrying)"
        DEAD = "dead", "Dead"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    chat_id = models.BigIntegerField(null=True, blank=True)  # the event's, for the order rule's index
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="delivery_unique_event_endpoint"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "succeeded", "failed", "dead"]), name="delivery_status_valid"
            ),
        ]
        indexes = [
            # The claim walks each endpoint's unfinished deliveries in event order and stops at its window (no
            # sort of every due row per claim).
            models.Index(fields=["endpoint", "event"], condition=_UNFINISHED, name="delivery_endpoint_claim_idx"),
            # The order rule: an unfinished earlier delivery of the same chat to the same endpoint.
            models.Index(
                fields=["endpoint", "chat_id", "event"], condition=_UNFINISHED, name="delivery_chat_order_idx"
            ),
            models.Index(fields=["endpoint", "created_at", "id"], name="delivery_endpoint_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id}: {self.status}"


class DeliveryAttempt(models.Model):
    """One request of a delivery and how it went."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()

    class Meta:
        ordering = ["attempted_at", "id"]
        indexes = [models.Index(fields=["delivery", "attempted_at"], name="delivery_attempt_idx")]
