import uuid

from django.utils.dateparse import parse_datetime

from conversations.services import inbound_event_record
from sociomile.celery import app


@app.task
def inbound_event_record_task(event_id: str, payload: dict, created_at: str) -> None:
    """Persists one event published to the tenant's queue into the tenant's event log (idempotent)."""
    inbound_event_record(event_id=uuid.UUID(event_id), payload=payload, created_at=parse_datetime(created_at))
