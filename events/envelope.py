"""What an event looks like outside: its times and its envelope, the same bytes for a webhook and the stream.

A module of its own, importing only the model, so that readers of the outbox (the delivery engine, the stream)
need not import the services that record events, which announce them to those very readers.
"""

import json
from datetime import UTC, datetime

from events.models import Event


def event_time(value: datetime | None) -> str | None:
    """How an event writes a time: UTC, microseconds, "Z" (the same text as `_ISO` in SQL)."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def webhook_envelope(event: Event) -> bytes:
    """The body every endpoint gets for `event`: the same bytes on every attempt."""
    return json.dumps(
        {"id": event.webhook_id, "type": event.type, "created_at": event_time(event.created_at), "data": event.data},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
