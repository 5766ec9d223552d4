"""The ASGI process's fan-out: ONE Redis subscription (a pattern over every tenant's notice channel) and the open
streams of this process, in memory.

Each notice (stream.services) carries an event, what the filter needs and its envelope; the hub picks the
connections of that tenant that receive it (stream.access, through an index: a notice costs its receivers, not
a test of every connection) and appends the SSE frame to each one's bounded queue. No database work here.
Notices are handled one batch at a time, in the order Redis delivered them, so a connection receives events in
commit order.

A connection that lets STREAM_CONNECTION_QUEUE frames pile up is closed (its client reconnects with
Last-Event-ID and replays from the outbox): a slow reader never blocks the others nor grows this process. When
the subscription itself is lost every stream is closed the same way, since notices published meanwhile are
gone: a gap is never silent.
"""

import asyncio
import contextvars
import json
import logging
from collections import deque

import redis.asyncio
from django.conf import settings

from events.envelope import webhook_envelope
from core.models import User
from stream.access import stream_event_audience
from stream.services import CHANNEL_PATTERN, StreamViewer, stream_listening_key

logger = logging.getLogger(__name__)

# Notices read from the subscription and handled together (one outbox query per tenant among them).
_BATCH = 500
# How long a connection remembers the events its replay sent, to drop their live notices (see replay_done).
REPLAYED_MEMORY_SECONDS = 60.0
# (schema, event id) of recent notices: a notice published twice (stream.services) is dispatched once.
_RECENT = 10_000


def sse_frame(*, public_id: str, type: str, envelope: bytes) -> bytes:
    """An event as one Server-Sent Events frame: `id:` the public event id, `event:` the type, `data:` the
    webhook envelope (JSON escapes line breaks, so the data is one line)."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (public_id.encode(), type.encode(), envelope)


def sse_frame_of(event) -> bytes:
    """The frame of an outbox row (the replay)."""
    return sse_frame(public_id=event.webhook_id, type=event.type, envelope=webhook_envelope(event))


class StreamConnection:
    """One open stream: its tenant, viewer, and the frames waiting to be written to it."""

    __slots__ = ("schema_name", "viewer", "pending", "wake", "is_overflowed", "replayed")

    def __init__(self, *, schema_name: str, viewer: StreamViewer):
        self.schema_name, self.viewer = schema_name, viewer
        self.pending: deque[tuple[int, bytes]] = deque()
        self.wake = asyncio.Event()
        self.is_overflowed = False
        self.replayed: set[int] = set()

    def push(self, event_id: int, frame: bytes) -> None:
        if self.is_overflowed or event_id in self.replayed:
            return
        if len(self.pending) >= settings.STREAM_CONNECTION_QUEUE:
            # Dropping frames would be a silent gap: end the stream instead, the client replays what it missed.
            self.is_overflowed = True
            self.pending.clear()
        else:
            self.pending.append((event_id, frame))
        self.wake.set()

    def close(self) -> None:
        """Ends the stream at the writer's next turn (the client reconnects with Last-Event-ID)."""
        self.is_overflowed = True
        self.pending.clear()
        self.wake.set()

    def replay_done(self, event_ids: set[int]) -> None:
        """The replay sent `event_ids`: their live notices, queued already or still to come (a notice follows its
        commit by the publish and the outbox read, so it can arrive after the replay read the row), are dropped.
        The ids are forgotten after REPLAYED_MEMORY_SECONDS, long after any such notice."""
        if not event_ids:
            return
        self.pending = deque(item for item in self.pending if item[0] not in event_ids)
        self.replayed = event_ids
        asyncio.get_running_loop().call_later(REPLAYED_MEMORY_SECONDS, self._replayed_forget)

    def _replayed_forget(self) -> None:
        self.replayed = set()



class TenantConnections:
    """One tenant's open streams, indexed the way stream.access.stream_event_audience names receivers: a notice
    costs the receivers it has, not a test of every connection of the tenant."""

    __slots__ = ("admins", "agents", "agents_by_user")

    def __init__(self):
        self.admins: set[StreamConnection] = set()
        self.agents: set[StreamConnection] = set()
        self.agents_by_user: dict[int, set[StreamConnection]] = {}

    def add(self, connection: StreamConnection) -> None:
        if connection.viewer.role == User.Role.ADMIN:
            self.admins.add(connection)
        elif connection.viewer.role == User.Role.AGENT:
            self.agents.add(connection)
            self.agents_by_user.setdefault(connection.viewer.user_id, set()).add(connection)

    def discard(self, connection: StreamConnection) -> None:
        self.admins.discard(connection)
        self.agents.discard(connection)
        own = self.agents_by_user.get(connection.viewer.user_id)
        if own is not None:
            own.discard(connection)
            if not own:
                del self.agents_by_user[connection.viewer.user_id]

    def __len__(self) -> int:
        return len(self.admins) + len(self.agents)

    def __iter__(self):
        yield from self.admins
        yield from self.agents

    def receivers(self, notice: list) -> list[StreamConnection]:
        _event_id, type, chat_id, assigned_agent_id, is_private = notice[:5]
        every_agent, agent_id = stream_event_audience(type=type, chat_id=chat_id, assigned_agent_id=assigned_agent_id,
                                                      is_private=is_private)  # fmt: skip
        if every_agent:
            return [*self.admins, *self.agents]
        return [*self.admins, *self.agents_by_user.get(agent_id, ())] if agent_id is not None else list(self.admins)


class StreamHub:
    """This process's subscription and its connections by tenant (one hub per event loop)."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.connections: dict[str, TenantConnections] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._recent: deque[tuple[str, int]] = deque()
        self._recent_set: set[tuple[str, int]] = set()
        self._marks: redis.asyncio.Redis | None = None
        self._marks_task: asyncio.Task | None = None

    async def ensure_subscribed(self, timeout: float = 5.0) -> bool:
        """Starts the subscription unless it runs; True once it is subscribed (False: Redis is unreachable)."""
        if self._task is None or self._task.done():
            # A context of its own: the task outlives the request that starts it, and must not inherit its
            # context (Django's thread-sensitive executor of that request among others).
            self._task = asyncio.create_task(self._listen(), name="stream-subscription", context=contextvars.Context())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def listening(self, schema_name: str) -> None:
        """Marks the tenant as listened to (stream.services publishes its notices only then), before a connection
        of it registers; the marks of every tenant with a connection here are renewed until the last one closes."""
        if self._marks is None:
            self._marks = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
        await self._marks.set(stream_listening_key(schema_name), 1, ex=settings.STREAM_LISTENING_SECONDS)
        if self._marks_task is None or self._marks_task.done():
            self._marks_task = asyncio.create_task(self._marks_renew(), name="stream-listening", context=contextvars.Context())

    async def _marks_renew(self) -> None:
        period = settings.STREAM_LISTENING_SECONDS / 3
        while True:
            await asyncio.sleep(period)
            try:
                async with self._marks.pipeline(transaction=False) as pipe:
                    for schema_name in list(self.connections):
                        pipe.set(stream_listening_key(schema_name), 1, ex=settings.STREAM_LISTENING_SECONDS)
                    await pipe.execute()
            except Exception:
                # Redis away: the subscription's own loss closes the streams; the marks come back with them.
                logger.warning("stream listening marks not renewed", exc_info=True)

    def register(self, connection: StreamConnection) -> None:
        self.connections.setdefault(connection.schema_name, TenantConnections()).add(connection)

    def unregister(self, connection: StreamConnection) -> None:
        connections = self.connections.get(connection.schema_name)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self.connections[connection.schema_name]

    def connection_count(self) -> int:
        return sum(len(connections) for connections in self.connections.values())

    async def _listen(self) -> None:
        while True:
            client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(CHANNEL_PATTERN)
                self._ready.set()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None:
                        continue
                    batch = [message]
                    while len(batch) < _BATCH:
                        message = await pubsub.get_message(timeout=0)
                        if message is None:
                            break
                        batch.append(message)
                    self._dispatch_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("stream subscription lost; closing this process's streams", exc_info=True)
                self._ready.clear()
                for connections in list(self.connections.values()):
                    for connection in list(connections):
                        connection.close()
                await asyncio.sleep(1.0)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:
                    pass

    def _is_new(self, schema_name: str, event_id: int) -> bool:
        key = (schema_name, event_id)
        if key in self._recent_set:
            return False
        self._recent.append(key)
        self._recent_set.add(key)
        if len(self._recent) > _RECENT:
            self._recent_set.discard(self._recent.popleft())
        return True

    def _dispatch_batch(self, messages: list[dict]) -> None:
        # Consecutive notices of one tenant are handled together; tenants stay in the order they came.
        groups: list[tuple[str, list]] = []
        for message in messages:
            schema_name = message["channel"].decode().split(":")[1]
            notices = json.loads(message["data"])
            if groups and groups[-1][0] == schema_name:
                groups[-1][1].extend(notices)
            else:
                groups.append((schema_name, notices))
        for schema_name, notices in groups:
            self._dispatch(schema_name, notices)

    def _dispatch(self, schema_name: str, notices: list) -> None:
        connections = self.connections.get(schema_name)
        for notice in notices:
            if not self._is_new(schema_name, notice[0]) or not connections:
                continue
            wanting = connections.receivers(notice)
            if wanting:
                frame = sse_frame(public_id=notice[5], type=notice[1], envelope=notice[6].encode())
                for connection in wanting:
                    connection.push(notice[0], frame)


_hub: StreamHub | None = None


def stream_hub() -> StreamHub:
    """This process's hub, made on first use in the running event loop."""
    global _hub
    if _hub is None or _hub.loop is not asyncio.get_running_loop():
        _hub = StreamHub()
    return _hub
