import uuid

from django.db import models


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
