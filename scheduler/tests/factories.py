from datetime import datetime, timedelta

from django.utils import timezone

from scheduler.models import OutboundMessage


def make_outbound_messages(count: int, *, start: datetime | None = None, **fields) -> list[OutboundMessage]:
    """`count` pending messages in the current schema, created one second apart (oldest first)."""
    start = start or timezone.now() - timedelta(minutes=10)
    return [
        OutboundMessage.objects.create(
            to=f"+628123456{n:04d}", content=f"message {n}", created_at=start + timedelta(seconds=n), **fields
        )
        for n in range(count)
    ]
