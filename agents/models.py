import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from conversations.models import Chat


def _default_max_customers() -> int:
    return settings.AGENT_DEFAULT_MAX_CUSTOMERS


def _integration_key() -> str:
    return secrets.token_urlsafe(32)


class AllocationSettings(models.Model):
    """The tenant's allocation settings: one row per tenant schema (pk 1), made on first use.

    `default_max_customers` is what a new agent gets when its creator does not say; the Qiscus key and
    application belong to the tenant's Qiscus adapter (integrations/qiscus/).
    """

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    default_max_customers = models.PositiveIntegerField(default=_default_max_customers)
    qiscus_integration_key = models.CharField(max_length=64, default=_integration_key)
    qiscus_application = models.ForeignKey(
        "conversations.Application", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = verbose_name_plural = "allocation settings"
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="allocation_settings_singleton")]

    def __str__(self) -> str:
        return "Allocation settings"


class Agent(models.Model):
    """A tenant user (admin or agent) who can be given chats.

    The primary key *is* the user's id, so `id` in /api/agents and `assigned_agent` in chat output are the
    same number. `active_chats` is the number of its chats with status `assigned`, kept by the services in
    the same transaction as every change to those chats (docs/architecture.md, "Active chats").
    """

    # Deleted with its user by the database (ON DELETE CASCADE, set in migration 0002), not by Django's
    # collector: the users table also exists in the public schema, where this table does not, and the
    # collector would query it when a platform admin is deleted.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, primary_key=True, related_name="agent"
    )
    is_online = models.BooleanField(default=False)
    max_customers = models.PositiveIntegerField(default=_default_max_customers)
    # Exact, not an estimate: changed in the same transaction as the chats it counts, by every service that
    # assigns, resolves, transfers or requeues one, and recounted by the beat sweep (`agent_active_chats_reconcile`).
    # The assignment engine reads it instead of counting the open chats of every agent on each run.
    active_chats = models.PositiveIntegerField(default=0, db_default=0, editable=False)
    last_assigned_at = models.DateTimeField(null=True, blank=True, help_text="Tie-break: longest since then wins.")
    # The agent's id in Qiscus Omnichannel, for the assign_agent call; learnt from Qiscus' payloads by email.
    qiscus_agent_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["user_id"]
        indexes = [models.Index(fields=["is_online"], name="agent_online_idx")]

    def __str__(self) -> str:
        return str(self.user)


class Assignment(models.Model):
    """History: one row per time a chat was given to an agent, closed when that stint ends.

    The engine never reads it to decide (the chats are the truth); it is the audit trail operators and the
    tests use to check that no agent ever held more than its limit and that chats were served in order.
    """

    class Reason(models.TextChoices):
        QUEUE = "queue", "From the queue"
        MANUAL = "manual", "Assigned by an admin"

    class EndReason(models.TextChoices):
        RESOLVED = "resolved", "Resolved"
        TRANSFERRED = "transferred", "Transferred"
        TIMED_OUT = "timed_out", "No reply in time"
        REQUEUED = "requeued", "Agent deleted or deactivated"

    chat = models.ForeignKey("conversations.Chat", on_delete=models.CASCADE, related_name="assignments")
    # No constraint: the history keeps the agent's id after the agent is deleted.
    agent = models.ForeignKey(
        Agent, on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="assignments"
    )
    reason = models.CharField(max_length=16, choices=Reason.choices)
    assigned_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Closing a chat's open stint; the timed-out agent of a requeued chat.
            models.Index(fields=["chat", "ended_at"], name="assignment_chat_open_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.chat_id} -> {self.agent_id}"


class QueuedChat(Chat):
    """The waiting queue, as the tenant admin shows it (a view of `Chat`, no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "waiting chat"
        verbose_name_plural = "waiting queue"
