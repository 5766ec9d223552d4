"""The stream's writes: single-use tickets in Redis, and the notice each committed event publishes.

Tickets: an EventSource cannot send an Authorization header, so a staff user exchanges its token for a ticket
(`POST /api/stream/ticket`, WSGI side) and opens `GET /api/stream?ticket=` (ASGI side) with it. A ticket lives in
Redis under the tenant's own key, bound to the user; opening a stream takes it with GETDEL, so two connections
racing with one ticket get one stream between them.

Notices: after a transaction that recorded events commits, one message per recording statement goes to the
tenant's Redis channel `sociomile:<schema>:stream` carrying what the stream's filter needs and the envelope
(docs/stream.md). The ASGI processes each hold one pattern subscription over every tenant's channel. Only while a
stream of the tenant is open somewhere (its listening mark in Redis, set by stream.fanout): otherwise the commit
costs one Redis EXISTS instead of the query that builds the notices.
"""

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django_tenants.utils import schema_context

from core.redis import get_redis, tenant_key

logger = logging.getLogger(__name__)

CHANNEL_PATTERN = tenant_key("*", "stream")


def stream_channel(schema_name: str) -> str:
    """The tenant's notice channel (one per tenant; the ASGI processes subscribe to the pattern)."""
    return tenant_key(schema_name, "stream")


def stream_listening_key(schema_name: str) -> str:
    """Set while a stream of the tenant is open in some ASGI process (stream.fanout keeps it, with an expiry)."""
    return tenant_key(schema_name, "stream", "listening")


# --- tickets -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTicket:
    ticket: str
    expires_at: datetime


@dataclass(frozen=True)
class StreamViewer:
    """Who a stream is for: what the per-event filter (stream.access) decides on."""

    user_id: int
    role: str


def _ticket_key(schema_name: str, ticket: str) -> str:
    return tenant_key(schema_name, "stream", "ticket", ticket)


def stream_ticket_create(*, user) -> StreamTicket:
    """A single-use ticket for `user` (a tenant admin or agent) to open one stream in this tenant within
    STREAM_TICKET_SECONDS."""
    ticket = secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(seconds=settings.STREAM_TICKET_SECONDS)
    value = json.dumps({"user_id": user.pk, "role": user.role, "expires_at": expires_at.timestamp()})
    # Redis' expiry only cleans up; validity is decided by `expires_at` against our clock (see the consume).
    get_redis().set(_ticket_key(connection.schema_name, ticket), value, ex=settings.STREAM_TICKET_SECONDS + 5)
    return StreamTicket(ticket=ticket, expires_at=expires_at)


def stream_ticket_consume(*, schema_name: str, ticket: str) -> StreamViewer | None:
    """The viewer the ticket was made for, once: GETDEL takes it atomically, so a ticket opens one stream even
    when two connections race with it. None for an unknown, used, expired or other tenant's ticket (each is
    looked up under this tenant's key only)."""
    if not ticket or len(ticket) > 100:
        return None
    value = get_redis().getdel(_ticket_key(schema_name, ticket))
    if value is None:
        return None
    data = json.loads(value)
    if timezone.now().timestamp() >= data["expires_at"]:
        return None
    return StreamViewer(user_id=data["user_id"], role=data["role"])


# --- notices -----------------------------------------------------------------------------------------------

# The events one `_record` statement wrote share its `created_at` (events.services passes one `now` per
# statement), so the indexed `created_at` finds them after commit. An event of another transaction written at
# the very same microsecond is found too: its own notice is then sent twice, and the ASGI process drops the
# second (stream.fanout keeps the ids it dispatched lately).


def stream_notices_publish(*, schema_name: str, recorded_at: datetime) -> None:
    """Publishes the notices of the events recorded at `recorded_at` to the tenant's channel, one message for
    the statement: a list of [id, type, chat id, assigned agent id, private, public id, envelope]. Best effort, after
    commit: a lost notice is an event a live connection misses until it reconnects with Last-Event-ID (the
    outbox still has it), never a failed change.

    The envelope rides along (the webhook body, bytes-identical): this query runs anyway to find the events, and
    an ASGI process that had to read each event back from the outbox paid a thread hop and a PostgreSQL round
    trip per batch of notices, in every process (bench/README.md, "Figures behind the code")."""
    from conversations.models import Chat
    from events.envelope import webhook_envelope
    from events.models import Event

    try:
        # Checked after the commit: a stream registered before the commit set the mark before registering, so it
        # is seen here; one opened after it never expected this event (its replay reads the outbox).
        if not get_redis().exists(stream_listening_key(schema_name)):
            return
        with schema_context(schema_name):
            assigned = Chat.objects.filter(id=OuterRef("chat_id")).values("assigned_agent_id")[:1]
            events = list(Event.objects.filter(created_at=recorded_at).annotate(assigned=Subquery(assigned)).order_by("id"))
        if events:
            notices = [
                [event.id, event.type, event.chat_id, event.assigned, event.is_private, event.webhook_id,
                 webhook_envelope(event).decode()]
                for event in events
            ]
            get_redis().publish(stream_channel(schema_name), json.dumps(notices, ensure_ascii=False, separators=(",", ":")))
    except Exception:
        logger.warning("stream notices of %s not published", schema_name, exc_info=True)


def stream_notices_on_commit(*, recorded_at: datetime) -> None:
    """The hook events.services calls when it records events: their notices once the transaction commits."""
    schema_name = connection.schema_name
    transaction.on_commit(lambda: stream_notices_publish(schema_name=schema_name, recorded_at=recorded_at))
