import secrets
import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import F
from django.db.models.expressions import RawSQL

from conversations.lookups import TrigramIContains
from core.models import TimestampedModel


class InboundEvent(models.Model):
    """The tenant's event log: every event accepted for this tenant, persisted by its own consumers.

    `created_at` is when the API accepted the event, so the log lists events in arrival order whatever
    order the consumers happened to persist them in. An event its consumer could not persist is kept too:
    `accepted` while a retry is scheduled, `dead` (parked with its last error) once the retries are spent.
    """

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted, retrying"
        PROCESSED = "processed", "Processed"
        DEAD = "dead", "Dead (retries exhausted)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    payload = models.JSONField(null=True, blank=True, help_text="Empty only if the database refused the payload.")
    raw_payload = models.TextField(
        blank=True, default="", help_text="The payload as JSON text, kept when it could not be processed."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROCESSED)
    attempts = models.PositiveSmallIntegerField(default=1)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(help_text="When the event was accepted.")
    persisted_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["created_at", "id"], name="inbound_event_arrival_idx"),
            # The admin's "what is failing" view; processed events are the vast majority.
            models.Index(fields=["status"], name="inbound_event_failing_idx", condition=~models.Q(status="processed")),
        ]

    def __str__(self) -> str:
        return str(self.id)


def _application_token() -> str:
    # 192 bits from the OS's CSPRNG, URL-safe: unguessable, and safe in a path segment.
    return secrets.token_urlsafe(24)


def _webhook_secret() -> str:
    return secrets.token_hex(32)


class Application(TimestampedModel):
    """A tenant's channel or app. Device SDKs address it by `token`; the database id is never exposed."""

    token = models.CharField(max_length=64, unique=True, default=_application_token, editable=False)
    name = models.CharField(max_length=255)
    webhook_secret = models.CharField(max_length=64, default=_webhook_secret, editable=False)
    # Maintained by the persistence of queued creations (conversations.services.creations_persist), in the
    # same transaction as the rows it counts; conversations.services.counts_reconcile repairs any drift.
    chats_count = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.name


class Chat(TimestampedModel):
    class Status(models.TextChoices):
        WAITING = "waiting", "Waiting"
        ASSIGNED = "assigned", "Assigned"
        RESOLVED = "resolved", "Resolved"

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="chats")
    number = models.PositiveIntegerField(help_text="From 1 within its application.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING)
    customer_id = models.CharField(max_length=255, null=True, blank=True)
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="assigned_chats"
    )
    messages_count = models.PositiveIntegerField(default=0, editable=False)
    assigned_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # For the reports (reports/services.py sets both, in the transaction that makes them true). `assigned_at`
    # is the latest assignment (a transfer or a requeue moves or clears it); waiting time is measured to the
    # first one. `first_response_at`: the creation time of the chat's first agent message.
    first_assigned_at = models.DateTimeField(null=True, blank=True, editable=False)
    first_response_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["application_id", "number"]
        constraints = [models.UniqueConstraint(fields=["application", "number"], name="chat_number_unique_in_application")]
        indexes = [
            # The staff inbox and the waiting queue: by status, oldest first.
            models.Index(fields=["status", "created_at"], name="chat_status_created_idx"),
            models.Index(fields=["application", "status", "number"], name="chat_app_status_number_idx"),
            models.Index(fields=["assigned_agent", "status"], name="chat_agent_status_idx"),
            # The assignment engine's reads, as partial indexes so that each costs what it returns, not what the
            # tenant has ever handled. The queue's head, in its exact order: only waiting chats are indexed, so a
            # run does not walk past every chat ever assigned (with the full indexes the planner walked
            # `created_at` and filtered: 70-85 ms a run at 30,000 assigned chats), and assigning a chat adds
            # nothing to it. Assigned chats whose agent was deleted: (nearly) always empty, so that check costs
            # nothing however many chats are assigned, and no assignment writes to it.
            models.Index(
                fields=["created_at", "application", "number"],
                name="chat_waiting_queue_idx",
                condition=models.Q(status="waiting"),
            ),
            models.Index(
                fields=["id"],
                name="chat_assigned_orphan_idx",
                condition=models.Q(status="assigned", assigned_agent__isnull=True),
            ),
            # The staff inbox across applications, newest first, unfiltered.
            models.Index(fields=["created_at"], name="chat_created_idx"),
            # The inbound webhook's fallback: the customer's open chat when Redis has no record of it.
            models.Index(fields=["application", "customer_id", "status"], name="chat_app_customer_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.application_id}#{self.number}"


# A message's search bucket: its chat and which run of SEARCH_BUCKET_SIZE consecutive numbers of that chat it falls
# in, as one bigint (chat_id * 2**22 + number // 1024; numbers are below 2**31, so number // 1024 < 2**22 and no two
# chats share a bucket), in a one-item array so that GIN's built-in array operator class indexes it and a window of
# buckets is one `&&` (overlap) condition. Written out as SQL once, here, because PostgreSQL serves a query from an
# expression index only when the query's expression is the index's, operator for operator. Search queries
# (conversations/selectors.py) use this very text.
SEARCH_BUCKET_SIZE = 1024
SEARCH_BUCKET_CHAT_STRIDE = 4194304  # 2**22
SEARCH_BUCKET_SQL = f"ARRAY[chat_id * {SEARCH_BUCKET_CHAT_STRIDE} + number / {SEARCH_BUCKET_SIZE}]"


class Message(TimestampedModel):
    class Sender(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    number = models.PositiveIntegerField(help_text="From 1 within its chat.")
    body = models.TextField()
    sender = models.CharField(max_length=16, choices=Sender.choices, default=Sender.CUSTOMER)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    # A staff-only note (PRODUCT.md, "Agent workspace"): never shown to the client API, and its event reaches
    # only the endpoints that opt in (`include_private`).
    is_private = models.BooleanField(default=False)
    # References the sender gave ({"url","mime_type","size","name"}), validated before queueing, never fetched.
    attachments = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["chat_id", "number"]
        constraints = [models.UniqueConstraint(fields=["chat", "number"], name="message_number_unique_in_chat")]
        indexes = [
            # Case-insensitive partial match (ILIKE "%q%") on bodies, a window of one chat at a time: a GIN index on
            # the message's search bucket and the trigrams of its body (pg_trgm), so that one scan intersects
            # "these buckets of this chat" with "bodies holding these trigrams" without reading every match in the
            # tenant (docs/architecture.md, "Search"). The trigram opclass schema-qualified because tenant
            # migrations run with the tenant schema alone on the search path, and pg_trgm lives in public.
            GinIndex(
                RawSQL(SEARCH_BUCKET_SQL, (), output_field=ArrayField(models.BigIntegerField())),
                OpClass(F("body"), name="public.gin_trgm_ops"),
                name="message_search_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.chat_id}.{self.number}"

    @property
    def chat_number(self) -> int:
        """The number of its chat, as the API names it (a page's rows carry it as a column: selectors.MESSAGE_ROW)."""
        return self.chat.number


class Ticket(TimestampedModel):
    """A chat escalated for follow-up. One per chat: the one-to-one's unique index decides between two
    concurrent escalations, not a check in Python."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        IN_PROGRESS = "in_progress", "In progress"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"

    chat = models.OneToOneField(Chat, on_delete=models.CASCADE, related_name="ticket")
    title = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.MEDIUM)
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="assigned_tickets"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="created_tickets"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="ticket_status_created_idx"),
            models.Index(fields=["priority", "created_at"], name="ticket_priority_created_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"


# Message search (conversations.selectors.message_search_page) filters `body__trigram_icontains`.
Message._meta.get_field("body").register_lookup(TrigramIContains)
