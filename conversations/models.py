import uuid

from django.db import models


class InboundEvent(models.Model):
    """The tenant's event log: every event accepted for this tenant, persisted by its own consumers.

    `created_at` is when the API accepted the event, so the log lists events in arrival order whatever
    order the consumers happened to persist them in.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    payload = models.JSONField()
    created_at = models.DateTimeField(help_text="When the event was accepted.")
    persisted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["created_at", "id"], name="inbound_event_arrival_idx")]

    def __str__(self) -> str:
        return str(self.id)
