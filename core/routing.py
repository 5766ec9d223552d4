"""Process-local caches of the rows every request resolves first: host -> tenant, token -> application.

Without them each request paid PostgreSQL round trips (the lookup, Django's connection health check, and a
`SET search_path`) for the host, and another for the application, on paths that otherwise touch Redis once.
A cache hit costs no I/O at all.

Invalidation: every change to a tenant, a domain or an application (`routing_changed`, called by the models'
save/delete hooks, see core.apps) publishes on the Redis channel `sociomile:public:routing:changed` after its
transaction commits. Each web process runs one listener thread subscribed to it (started by the first request,
`routing_listener_ensure`), and keeps a *generation*: a random token replaced on every message. An entry is
served only while the generation it was loaded under is still current, so:

- A change committed and published is never served again by any process, once its listener got the message
  (sub-millisecond on one machine); the process that made the change drops its entries at once, even before
  the commit.
- An entry loaded while a change was being committed carries the generation read before the load, which the
  change's message (sent after its commit) replaces.
- While the listener is not subscribed (starting, Redis unreachable, reconnecting) there is no generation and
  nothing is cached: rows are read from PostgreSQL, as before. A reconnection starts a new generation, so
  nothing loaded before a message that may have been missed survives it. Entries also expire after
  ENTRY_TTL_SECONDS whatever happens.
- Outside web requests (tasks, shell) the listener is not started, so nothing is cached there.

Entries are keyed by everything that selects them (the schema, for an application), so one tenant's entry can
never answer for another tenant.
"""

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Hashable

from django.db import transaction

from core.redis import get_redis, tenant_key

logger = logging.getLogger(__name__)

CHANNEL = tenant_key("public", "routing", "changed")
# Backstops, not the invalidation mechanism: an entry older than this is reloaded anyway, and a cache past
# this many entries (a flood of distinct hosts or tokens) starts over.
ENTRY_TTL_SECONDS = 60.0
MAX_ENTRIES = 10_000
# How long the listener waits before subscribing again after losing Redis.
LISTENER_RETRY_SECONDS = 1.0

_generation: str | None = None  # None: the listener is not subscribed, nothing is cached
_subscribed = False
_generation_lock = threading.Lock()
_listener_pid: int | None = None
_listener_lock = threading.Lock()
_caches: list["RoutingCache"] = []


def routing_changed() -> None:
    """A tenant, domain or application changed: this process drops its entries now, and every process
    (this one again included) once the change is committed and so visible to the reload."""
    _generation_renew()

    def publish():
        _generation_renew()
        try:
            get_redis().publish(CHANNEL, "changed")
        except Exception:
            # Other processes' listeners are likely cut off from Redis too (then they cache nothing); if not,
            # their entries live until ENTRY_TTL_SECONDS. Say so loudly.
            logger.exception("routing change not published; other processes may serve old routes for %ss",
                             ENTRY_TTL_SECONDS)  # fmt: skip

    transaction.on_commit(publish)


def routing_changed_receiver(sender, **kwargs) -> None:
    """post_save / post_delete receiver of Tenant, Domain and Application (connected in the apps' ready())."""
    routing_changed()


def routing_listener_ensure() -> None:
    """Starts this process's listener thread unless it runs (called by every request: a cheap check)."""
    global _listener_pid
    if _listener_pid == os.getpid():
        return
    with _listener_lock:
        if _listener_pid == os.getpid():
            return
        # A forked child inherits the parent's entries and generation but not its thread: start afresh.
        _generation_renew(subscribed=False)
        threading.Thread(target=_listen, name="routing-cache-listener", daemon=True).start()
        _listener_pid = os.getpid()


def _listen() -> None:
    while True:
        pubsub = None
        try:
            pubsub = get_redis().pubsub()
            pubsub.subscribe(CHANNEL)
            while True:
                # redis-py pings an idle subscription (health_check_interval) and raises once it is lost; a
                # subscription it restores by itself is confirmed again, which starts a new generation too.
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    _generation_renew(subscribed=True if message["type"] == "subscribe" else None)
        except Exception:
            _generation_renew(subscribed=False)
            logger.warning("routing cache off: lost its Redis subscription; retrying in %ss", LISTENER_RETRY_SECONDS,
                           exc_info=True)  # fmt: skip
            time.sleep(LISTENER_RETRY_SECONDS)
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:
                    pass


def _generation_renew(*, subscribed: bool | None = None) -> None:
    """Drops every entry and starts a new generation; `subscribed` records the listener's state (None: as
    it is). Only a subscribed listener allows caching, and nothing from before this call is served again."""
    global _generation, _subscribed
    with _generation_lock:
        if subscribed is not None:
            _subscribed = subscribed
        _generation = uuid.uuid4().hex if _subscribed else None
        _caches_clear()


def routing_caches_clear() -> None:
    """Drops this process's entries (the tests, after rolling back rows no hook saw go)."""
    _caches_clear()


def _caches_clear() -> None:
    for cache in _caches:
        cache.clear()


def routing_generation() -> str | None:
    """The current generation; None while nothing may be cached (listener not subscribed)."""
    return _generation


class RoutingCache:
    """A dict of loaded values, each tagged with the generation it was loaded under (see module doc)."""

    def __init__(self, name: str):
        self.name = name
        self._entries: dict[Hashable, tuple[str, float, object]] = {}
        self._lock = threading.Lock()
        _caches.append(self)

    def get_or_load(self, key: Hashable, load: Callable[[], object]) -> object:
        """The value for `key`: cached if loaded under the current generation, else `load()`. A None result
        (not found) is not cached, so a row created later is found at once."""
        generation = _generation  # read before loading: a change during the load makes the entry stale
        if generation is None:
            return load()
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] == generation and entry[1] > now:
            return entry[2]
        value = load()
        if value is not None:
            with self._lock:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (generation, now + ENTRY_TTL_SECONDS, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
