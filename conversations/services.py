import uuid
from datetime import datetime

from conversations.models import InboundEvent


def inbound_event_record(*, event_id: uuid.UUID, payload: dict, created_at: datetime) -> InboundEvent:
    """Persists an accepted event once: a redelivered message finds its row and writes nothing."""
    event, _ = InboundEvent.objects.get_or_create(id=event_id, defaults={"payload": payload, "created_at": created_at})
    return event
