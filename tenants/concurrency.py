"""Per-tenant concurrency: at most `Tenant.concurrency` of a tenant's tasks run at once, fleet-wide.

The cap is a counting semaphore in Redis, one per tenant (docs/architecture.md, "Per-tenant concurrency
and fairness"):

- `sociomile:<schema>:slots`, a sorted set of lease tokens scored by their expiry (Redis server time, so
  machines with skewed clocks agree). A task holds a lease while it runs; a lease whose worker died
  expires after TENANT_SLOT_LEASE_SECONDS and frees its slot.
- `sociomile:<schema>:slots:limit`, the tenant's current limit: a cache of `Tenant.concurrency`, written by
  `PUT .../config/concurrency` at once and reconciled from the database by every worker's queue sync.
- `sociomile:<schema>:slots:closed`, set while the tenant is being deleted: no new task of it starts.

Acquiring is one Lua script (drop expired leases, compare the count with the limit, add the lease), so
two workers never both take the last slot.

Where the gate sits, and why there: `TenantSlotGate` wraps the worker's `on_task_request` in the worker's
main process, which every task message passes through just before it is handed to a pool process
(fresh messages, ETA/countdown retries when they fall due, rate-limited ones). A task that gets a slot is
handed over with its lease; the main process refreshes the leases of running tasks and releases each one
the moment its task finishes (or, as a backstop, when the worker's state says the request is done).

A task that finds its tenant saturated is *parked* in the main process, still unacknowledged: the worker
raises its prefetch by one so the parked message does not occupy a slot other tenants could use, stops
consuming that tenant's queue (so it does not pull more of that tenant's backlog), and asks again for a
slot after TENANT_SLOT_POLL_SECONDS, backing off to PARKED_RETRY_MAX_SECONDS while the tenant stays
saturated (at once when one of that tenant's tasks ends on this worker); when the last parked task of a
tenant runs, its queue is consumed again. We chose this
over the alternatives:

- Re-publishing the task (`retry`/`apply_async` with a delay) when no slot is free counts against the
  task's `max_retries`, busy-spins through the broker while the tenant stays saturated (or, with a
  countdown, drags the backlog into worker memory as ETA tasks), and reorders the tenant's queue.
- Acquiring inside the task body holds a pool process hostage while it waits.
- Parking keeps acks_late intact: the message stays unacknowledged until the task ran, so a worker
  killed while it parks a task loses nothing (Redis hands the message out again after the visibility
  timeout, and on a warm shutdown kombu puts unacknowledged messages back at once). A task parked for
  half the visibility timeout is put back at the end of its queue, so it is never handed out twice.
"""

import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from celery import bootsteps
from celery.worker import state as worker_state
from django.conf import settings
from django_tenants.utils import get_public_schema_name

from core.redis import get_redis, tenant_key
from tenants.queues import tenant_queue_name

logger = logging.getLogger(__name__)

ACQUIRED, SATURATED, CLOSED = 1, 0, -1
# The longest a worker waits before asking again for a slot of a saturated tenant it parks tasks of.
PARKED_RETRY_MAX_SECONDS = 0.5
# How often a worker parking tasks checks whether their tenants are being deleted.
CLOSED_CHECK_SECONDS = 0.5

# KEYS: slots, limit, closed. ARGV: token, lease ms, fallback limit. Returns ACQUIRED, SATURATED or CLOSED.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local limit = tonumber(redis.call('GET', KEYS[2]) or ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""

# KEYS: slots. ARGV: lease ms, tokens... Extends the leases that still exist (XX: an expired lease is not
# revived: its slot may already be someone else's).
_REFRESH = """
local now = redis.call('TIME')
local expiry = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""

# KEYS: slots. Live leases only.
_IN_USE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms, '+inf')
"""

# KEYS: limit. ARGV: value read before reading the database, new value. Compare-and-set, so a worker
# that read the database just before a PUT committed never overwrites the newer value the PUT wrote.
_LIMIT_RECONCILE = """
local current = redis.call('GET', KEYS[1]) or ''
if current == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def _slots_key(schema_name: str) -> str:
    return tenant_key(schema_name, "slots")


def _limit_key(schema_name: str) -> str:
    return tenant_key(schema_name, "slots", "limit")


def _closed_key(schema_name: str) -> str:
    # A platform key, not one of the tenant's: it outlives the tenant (tenant_slots_close) while every key
    # under `sociomile:<schema>:` is deleted with it. "_" cannot start a slug, so it names no tenant.
    return f"sociomile:_closed-tenants:{schema_name}"


def _lease_ms() -> int:
    return int(settings.TENANT_SLOT_LEASE_SECONDS * 1000)


def tenant_slot_acquire(*, schema_name: str, token: str, fallback_limit: int) -> int:
    """Takes one of the tenant's slots: ACQUIRED, SATURATED (all taken) or CLOSED (tenant being deleted)."""
    keys = [_slots_key(schema_name), _limit_key(schema_name), _closed_key(schema_name)]
    return int(get_redis().eval(_ACQUIRE, 3, *keys, token, _lease_ms(), fallback_limit))


def tenant_slot_release(*, schema_name: str, token: str) -> None:
    get_redis().zrem(_slots_key(schema_name), token)


def tenant_slots_refresh(*, schema_name: str, tokens: list[str]) -> None:
    """Extends the leases of tasks that still run (called by the worker that runs them)."""
    if tokens:
        get_redis().eval(_REFRESH, 1, _slots_key(schema_name), _lease_ms(), *tokens)


def tenant_slots_in_use(*, schema_name: str) -> int:
    """How many of the tenant's tasks run right now, across every worker (live leases)."""
    return int(get_redis().eval(_IN_USE, 1, _slots_key(schema_name)))


def tenant_slots_in_use_many(*, schema_names: list[str]) -> dict[str, int]:
    with get_redis().pipeline(transaction=False) as pipe:
        for name in schema_names:
            pipe.eval(_IN_USE, 1, _slots_key(name))
        return {name: int(count) for name, count in zip(schema_names, pipe.execute())}


def tenant_concurrency_limit_set(*, schema_name: str, limit: int) -> None:
    """Publishes the tenant's new limit to every worker: the next task that asks for a slot obeys it."""
    get_redis().set(_limit_key(schema_name), limit)


def tenant_concurrency_limits_reconcile(*, limits: dict[str, int], cached_before: dict[str, bytes | None]) -> None:
    """Writes database limits that differ from Redis, unless Redis changed since `cached_before` was read."""
    client = get_redis()
    with client.pipeline(transaction=False) as pipe:
        for schema_name, limit in limits.items():
            before = cached_before.get(schema_name)
            if before is None or int(before) != limit:
                pipe.eval(_LIMIT_RECONCILE, 1, _limit_key(schema_name), (before or b"").decode(), limit)
        pipe.execute()


def tenant_concurrency_limits_cached(*, schema_names: list[str]) -> dict[str, bytes | None]:
    if not schema_names:
        return {}
    values = get_redis().mget([_limit_key(name) for name in schema_names])
    return dict(zip(schema_names, values))


def tenant_slots_close(*, schema_name: str) -> None:
    """Stops every worker from starting the tenant's tasks (tenant deletion); running ones finish."""
    # Kept for a while after the tenant is gone, so a straggler message (a retry held by a worker) is
    # dropped quietly instead of failing on a missing schema. tenant_slots_open clears it.
    get_redis().set(_closed_key(schema_name), 1, ex=3600)


def tenant_slots_open(*, schema_name: str, limit: int) -> None:
    """A new tenant (or one re-created with a slug just deleted): clears the closed mark, sets the limit."""
    with get_redis().pipeline() as pipe:
        pipe.delete(_closed_key(schema_name), _slots_key(schema_name))
        pipe.set(_limit_key(schema_name), limit)
        pipe.execute()


def tenant_slots_is_closed(*, schema_names: list[str]) -> set[str]:
    if not schema_names:
        return set()
    with get_redis().pipeline(transaction=False) as pipe:
        for name in schema_names:
            pipe.exists(_closed_key(name))
        return {name for name, closed in zip(schema_names, pipe.execute()) if closed}


def tenant_slots_wait_idle(*, schema_name: str, timeout: float) -> bool:
    """Waits until none of the tenant's tasks runs anywhere; False if some still ran after `timeout` s."""
    deadline = time.monotonic() + timeout
    while tenant_slots_in_use(schema_name=schema_name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def tenant_slots_forget(*, schema_name: str) -> None:
    """Removes the tenant's semaphore and limit once the tenant is gone (the closed mark expires alone)."""
    get_redis().delete(_slots_key(schema_name), _limit_key(schema_name))


# --- the worker side -----------------------------------------------------------------------------------


def request_schema_name(request) -> str | None:
    """The tenant a task request belongs to (tenant-schemas-celery's header), None for platform work."""
    schema_name = request.request_dict.get("_schema_name")
    if not schema_name or schema_name == get_public_schema_name():
        return None
    return schema_name


def task_schema_name(task) -> str | None:
    """Inside a running task: its tenant, None for platform work."""
    request = task.request
    schema_name = (request.headers or {}).get("_schema_name") or request.get("_schema_name")
    if not schema_name or schema_name == get_public_schema_name():
        return None
    return schema_name


@dataclass
class _Parked:
    request: object
    since: float = field(default_factory=time.monotonic)


class TenantSlotGate:
    """Lives in a worker's main process: lets a tenant's task reach the pool only with one of its slots."""

    def __init__(self, consumer, dispatch):
        self.consumer = consumer
        self.dispatch = dispatch  # the worker's own on_task_request: hands a request to the pool
        self.leases: dict[object, tuple[str, str]] = {}  # request -> (schema, token), while it runs
        self.parked: dict[str, deque[_Parked]] = {}  # schema -> its tasks waiting for a slot, in order
        self.limits: dict[str, int] = {}  # the database's limits, as of the last queue sync
        self.retry_at: dict[str, float] = {}  # schema -> when to ask again for a slot for its parked tasks
        self.retry_delay: dict[str, float] = {}
        self.next_closed_check = 0.0
        self.timer_entries: list = []
        self.last_refresh = time.monotonic()

    # Called for every task the worker is about to run.
    def on_task_request(self, request) -> None:
        schema_name = request_schema_name(request)
        if schema_name is None:
            return self.dispatch(request)
        if schema_name in self.parked:
            # Its tenant is saturated and older tasks of it wait already: keep the tenant's order.
            return self._park(schema_name, request)
        outcome = self._acquire(schema_name, request)
        if outcome == SATURATED:
            self._park(schema_name, request)
            self._pause(schema_name)
        elif outcome == CLOSED:
            self._drop(request, schema_name)

    def _fallback_limit(self, schema_name: str) -> int:
        # Used only if Redis lost the limit (flushed, restarted): the database's value as of the last sync.
        from tenants.models import DEFAULT_TENANT_CONCURRENCY

        return self.limits.get(schema_name, DEFAULT_TENANT_CONCURRENCY)

    def is_paused(self, schema_name: str) -> bool:
        return schema_name in self.parked

    def _acquire(self, schema_name: str, request) -> int:
        token = f"{self.consumer.hostname}:{request.id}:{uuid.uuid4().hex[:8]}"
        outcome = tenant_slot_acquire(
            schema_name=schema_name, token=token, fallback_limit=self._fallback_limit(schema_name)
        )
        if outcome == ACQUIRED:
            self.leases[request] = (schema_name, token)
            self._release_when_done(request)
            try:
                self.dispatch(request)
            except BaseException:
                self._release(request)
                raise
        return outcome

    def _release_when_done(self, request) -> None:
        # The pool calls these in this process the moment the task ends (success, failure, lost child).
        # Celery builds a fast-path Request subclass per task type, so wrapping the bound callbacks of
        # this one request is the reliable hook; the timer's sweep covers any other way a request ends.
        for name in ("on_success", "on_failure"):
            callback = getattr(request, name)

            def release_then_call(*args, _callback=callback, **kwargs):
                self._release(request)
                return _callback(*args, **kwargs)

            setattr(request, name, release_then_call)

    def _release(self, request) -> None:
        lease = self.leases.pop(request, None)
        if lease is not None:
            self.retry_at.pop(lease[0], None)
            try:
                tenant_slot_release(schema_name=lease[0], token=lease[1])
            except Exception:  # Redis away: the lease expires by itself
                logger.warning("could not release a slot of %s", lease[0], exc_info=True)

    def _park(self, schema_name: str, request) -> None:
        self.parked.setdefault(schema_name, deque()).append(_Parked(request))
        # Like a task with an ETA: the parked message must not hold a prefetch slot other tenants could use.
        self.consumer.qos.increment_eventually()

    def _unpark(self, schema_name: str, *, resume: bool = True) -> _Parked:
        waiting = self.parked[schema_name]
        item = waiting.popleft()
        self.consumer.qos.decrement_eventually()
        if not waiting:
            del self.parked[schema_name]
            self.retry_at.pop(schema_name, None)
            self.retry_delay.pop(schema_name, None)
            if resume:
                self._resume(schema_name)
        return item

    def _pause(self, schema_name: str) -> None:
        queue_name = tenant_queue_name(schema_name)
        if self.consumer.task_consumer.consuming_from(queue_name):
            logger.info("tenant %s is at its concurrency limit: pausing %s on this worker", schema_name, queue_name)
            self.consumer.cancel_task_queue(queue_name)

    def _resume(self, schema_name: str) -> None:
        if schema_name in self.limits:  # still a tenant, as of the last sync (the sync adds it otherwise)
            self.consumer.add_task_queue(tenant_queue_name(schema_name))

    def _drop(self, request, schema_name: str) -> None:
        # The tenant is being deleted: its queue and whatever waits in it go too.
        logger.info("dropping task %s[%s] of tenant %s, which is being deleted", request.name, request.id, schema_name)
        request.acknowledge()
        worker_state.task_ready(request)

    def _busy_processes(self) -> int:
        parked = sum(len(waiting) for waiting in self.parked.values())
        return len(worker_state.reserved_requests) - parked

    # The timer, every TENANT_SLOT_POLL_SECONDS.
    def tick(self) -> None:
        try:
            self._sweep_finished()
            self._retry_parked()
            if time.monotonic() - self.last_refresh >= settings.TENANT_SLOT_LEASE_SECONDS / 3:
                self._refresh_leases()
        except Exception:  # Redis away for a moment: try again next tick
            logger.warning("tenant slot gate tick failed", exc_info=True)

    def _sweep_finished(self) -> None:
        for request in [request for request in self.leases if request not in worker_state.reserved_requests]:
            self._release(request)

    def _retry_parked(self) -> None:
        concurrency = self.consumer.controller.concurrency if self.consumer.controller else 1
        visibility_timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
        now = time.monotonic()
        if self.parked and now >= self.next_closed_check:
            # Tenants being deleted: drop what waits for them, whether or not a process is free here.
            self.next_closed_check = now + CLOSED_CHECK_SECONDS
            for schema_name in tenant_slots_is_closed(schema_names=list(self.parked)):
                while schema_name in self.parked:
                    self._drop(self._unpark(schema_name, resume=False).request, schema_name)
        for schema_name in list(self.parked):
            if self.retry_at.get(schema_name, 0.0) > now:
                continue
            while schema_name in self.parked:
                head = self.parked[schema_name][0]
                if now - head.since > visibility_timeout / 2:
                    # Parked too long: back to the end of its queue before Redis would hand it out twice.
                    self._unpark(schema_name)
                    if tenant_slots_is_closed(schema_names=[schema_name]):
                        self._drop(head.request, schema_name)  # its queue is gone: do not bring it back
                    else:
                        head.request.reject(requeue=True)
                        worker_state.task_ready(head.request)
                    continue
                if self._busy_processes() >= concurrency:
                    return  # no free process here: a slot taken now would sit idle
                token = f"{self.consumer.hostname}:{head.request.id}:{uuid.uuid4().hex[:8]}"
                outcome = tenant_slot_acquire(
                    schema_name=schema_name, token=token, fallback_limit=self._fallback_limit(schema_name)
                )
                if outcome == SATURATED:
                    self._back_off(schema_name, now)
                    break
                self.retry_delay.pop(schema_name, None)
                self._unpark(schema_name, resume=outcome != CLOSED)
                if outcome == CLOSED:
                    self._drop(head.request, schema_name)
                    continue
                self.leases[head.request] = (schema_name, token)
                self._release_when_done(head.request)
                try:
                    self.dispatch(head.request)
                except Exception:
                    self._release(head.request)
                    logger.exception("could not hand a parked task to the pool")

    def _back_off(self, schema_name: str, now: float) -> None:
        # A saturated tenant is asked again after 50 ms, then less and less often (up to 0.5 s): a worker
        # parking tasks of many saturated tenants must not hammer Redis. A slot freed on this worker
        # resets it (`_release`), so a tenant's own finished task hands its slot over at the next tick.
        previous = self.retry_delay.get(schema_name, settings.TENANT_SLOT_POLL_SECONDS / 2)
        delay = min(previous * 2, PARKED_RETRY_MAX_SECONDS)
        self.retry_delay[schema_name] = delay
        self.retry_at[schema_name] = now + delay

    def _refresh_leases(self) -> None:
        self.last_refresh = time.monotonic()
        by_tenant: dict[str, list[str]] = {}
        for schema_name, token in self.leases.values():
            by_tenant.setdefault(schema_name, []).append(token)
        for schema_name, tokens in by_tenant.items():
            tenant_slots_refresh(schema_name=schema_name, tokens=tokens)

    def forget_parked(self) -> None:
        """On a connection loss or shutdown: parked messages are not ours any more (kombu puts them back)."""
        self.parked.clear()
        self.retry_at.clear()
        self.retry_delay.clear()


class TenantConcurrencyStep(bootsteps.StartStopStep):
    """Worker consumer step: installs the `TenantSlotGate` in front of the pool and runs its timer."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        # Wrapped here, before the task strategies capture `on_task_request` when the Tasks step starts.
        self.gate = TenantSlotGate(parent, parent.on_task_request)
        parent.on_task_request = self.gate.on_task_request
        parent.tenant_slot_gate = self.gate

    def start(self, consumer):
        self.gate.timer_entries.append(
            consumer.timer.call_repeatedly(settings.TENANT_SLOT_POLL_SECONDS, self.gate.tick, priority=5)
        )

    def stop(self, consumer):
        for entry in self.gate.timer_entries:
            entry.cancel()
        self.gate.timer_entries.clear()
        self.gate.forget_parked()

    def shutdown(self, consumer):
        self.stop(consumer)
