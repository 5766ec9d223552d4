"""The stream's reads from the events outbox: the event a Last-Event-ID names, and the replay after it. Synchronous ORM code: the ASGI view runs it in a worker thread (stream.apis), never on the loop.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from conversations.models import Chat
from core.models import User
from events.models import Event
from stream.access import QUEUE_EVENT_TYPES
from stream.services import StreamViewer


def stream_last_event_get(*, last_event_id: str) -> Event | None:
    """The event a client's Last-Event-ID (`evt_<uuid>`) names, if it is one of this tenant's events within the
    replay window; None for a malformed, forged, unknown, other tenant's or too old id."""
    if not last_event_id.startswith("evt_"):
        return None
    try:
        public_id = uuid.UUID(last_event_id.removeprefix("evt_"))
    except ValueError:
        return None
    since = timezone.now() - timedelta(seconds=settings.STREAM_REPLAY_SECONDS)
    return Event.objects.filter(public_id=public_id, created_at__gte=since).first()


def stream_replay_page(*, viewer: StreamViewer, after_id: int, limit: int) -> list[Event]:
    """Up to `limit` of the viewer's events after the outbox id `after_id` and within the replay window, in id
    order (the order events happened in). stream.access.stream_event_visible as a filter; an agent's events are
    chosen by their chats' assignment as it is now."""
    since = timezone.now() - timedelta(seconds=settings.STREAM_REPLAY_SECONDS)
    events = Event.objects.filter(id__gt=after_id, created_at__gte=since)
    if viewer.role == User.Role.AGENT:
        assigned = Exists(Chat.objects.filter(id=OuterRef("chat_id"), assigned_agent_id=viewer.user_id))
        events = events.filter(Q(assigned) | Q(type__in=QUEUE_EVENT_TYPES, is_private=False))
    elif viewer.role != User.Role.ADMIN:
        return []
    return list(events.order_by("id")[:limit])
