import uuid

from django.conf import settings
from django.utils.dateparse import parse_datetime

from conversations.services import counts_reconcile, creations_persist, inbound_event_record
from sociomile.celery import app


@app.task
def inbound_event_record_task(event_id: str, payload: dict, created_at: str) -> None:
    """Persists one event published to the tenant's queue into the tenant's event log (idempotent)."""
    inbound_event_record(event_id=uuid.UUID(event_id), payload=payload, created_at=parse_datetime(created_at))


@app.task
def creations_persist_task() -> None:
    """Drains the tenant's queued chat and message creations into PostgreSQL, in batches (idempotent)."""
    creations_persist(batch_size=settings.CREATIONS_BATCH_SIZE)


@app.task
def counts_reconcile_task() -> None:
    """Repairs drifted chats_count / messages_count in the tenant's schema (the periodic safety net)."""
    counts_reconcile()
