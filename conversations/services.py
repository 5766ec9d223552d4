import json
import uuid
from datetime import datetime

from django.db import DataError, transaction

from conversations.models import InboundEvent

# Longest error text kept on an event: enough for a database message and its context line.
LAST_ERROR_MAX_LENGTH = 2000


def inbound_event_record(*, event_id: uuid.UUID, payload: dict, created_at: datetime, attempt: int = 1) -> InboundEvent:
    """Persists an accepted event once: a redelivered message finds its row and writes nothing.

    A row left `accepted` or `dead` by earlier failed attempts becomes `processed` when an attempt works.
    """
    with transaction.atomic():
        event, created = InboundEvent.objects.select_for_update().get_or_create(
            id=event_id,
            defaults={
                "payload": payload,
                "created_at": created_at,
                "attempts": attempt,
                "status": InboundEvent.Status.PROCESSED,
            },
        )
        if not created and event.status != InboundEvent.Status.PROCESSED:
            event.payload, event.raw_payload, event.last_error = payload, "", ""
            event.status, event.attempts = InboundEvent.Status.PROCESSED, max(event.attempts, attempt)
            event.save(update_fields=["payload", "raw_payload", "last_error", "status", "attempts", "updated_at"])
    return event


def inbound_event_attempt_failed(
    *, event_id: uuid.UUID, payload: dict, created_at: datetime, attempt: int, error: BaseException, is_final: bool
) -> InboundEvent | None:
    """Records a failed attempt to persist an event: `accepted` (a retry follows) or `dead` (parked).

    The payload is kept as JSON text in `raw_payload` in any case, and in `payload` too when the database
    takes it (it refuses, for example, a NUL character in a jsonb string). Never overwrites a processed row.
    """
    raw_payload = json.dumps(payload)  # ASCII-escaped: storable as text even when jsonb refuses it
    fields = {
        "created_at": created_at,
        "raw_payload": raw_payload,
        "status": InboundEvent.Status.DEAD if is_final else InboundEvent.Status.ACCEPTED,
        "attempts": attempt,
        "last_error": f"{error.__class__.__name__}: {error}".replace("\x00", "\\u0000")[:LAST_ERROR_MAX_LENGTH],
    }
    for stored_payload in (payload, None):
        try:
            with transaction.atomic():
                event = InboundEvent.objects.select_for_update().filter(id=event_id).first()
                if event is not None and event.status == InboundEvent.Status.PROCESSED:
                    return event  # a concurrent delivery of the same event made it
                event, _ = InboundEvent.objects.update_or_create(
                    id=event_id, defaults={**fields, "payload": stored_payload}
                )
                return event
        except DataError:
            if stored_payload is None:
                raise
    return None
