"""The worker side of tenant queues: one consumer step follows the tenants' queues and gates their tasks.

Everything a Celery worker does about tenants lives here; sociomile/celery.py installs `TenantWorkerStep`
and nothing else. The step owns two parts, both in the worker's main process:

`TenantQueueFollower` keeps the set of consumed queues equal to `platform` + one queue per tenant (minus
tenants being deleted, minus tenants paused by the gate). Its steady state is O(1): every
TENANT_QUEUE_SYNC_SECONDS it reads one Redis counter, the tenants generation (tenants.queues), which
provisioning, deletion and concurrency changes bump. Only when it changed, at start, and every
TENANT_QUEUE_FULL_SYNC_SECONDS as a safety net does it re-read the tenants table. Provisioning also
broadcasts add_consumer, so a new tenant is served at once. At start the tenant queues are declared
without waiting for each reply and consumed in one batch (one round trip per queue would be minutes at
10,000 tenants); the start is logged with its count and duration.

`TenantSlotGate` wraps the worker's `on_task_request`, which every task message passes through just
before it is handed to a pool process (fresh messages, ETA/countdown retries when they fall due,
rate-limited ones). A tenant's task reaches the pool only with one of the tenant's slots
(tenants.concurrency); the main process refreshes the leases of running tasks and releases each one the
moment its task finishes (or, as a backstop, when the worker's state says the request is done).

A task that finds its tenant saturated is *parked* in the main process, still unacknowledged: the worker
raises its prefetch by one so the parked message does not occupy a slot other tenants could use, stops
consuming that tenant's queue (so it does not pull more of that tenant's backlog), and asks again for a
slot after TENANT_SLOT_POLL_SECONDS, backing off to PARKED_RETRY_MAX_SECONDS while the tenant stays
saturated (at once when one of that tenant's tasks ends on this worker); when the last parked task of a
tenant runs, its queue is consumed again. We chose this over the alternatives:

- Re-publishing the task (`retry`/`apply_async` with a delay) when no slot is free counts against the
  task's `max_retries`, busy-spins through the broker while the tenant stays saturated (or, with a
  countdown, drags the backlog into worker memory as ETA tasks), and reorders the tenant's queue.
- Acquiring inside the task body holds a pool process hostage while it waits.
- Parking keeps acks_late intact: the message stays unacknowledged until the task ran, so a worker
  killed while it parks a task loses nothing (RabbitMQ redelivers a dead consumer's unacknowledged
  messages at once, and on a warm shutdown they go back too). A task parked for TENANT_PARK_MAX_SECONDS
  is put back at the end of its queue, before RabbitMQ's consumer_timeout would close the channel.

The tenants' concurrency limits are read lazily: a worker reads a tenant's limit from the database only
when Redis lost it and a task of that tenant asks for a slot (and remembers it until the generation
changes), never every tenant's limit on every tick.
"""

import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from celery import bootsteps
from celery.worker import state as worker_state
from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context

from tenants import concurrency
from tenants.concurrency import ACQUIRED, CLOSED, SATURATED, tenant_slot_acquire, tenant_slot_release, tenant_slots_refresh
from tenants.queues import (
    TENANT_QUEUE_PREFIX,
    request_schema_name,
    tenant_queue_name,
    tenant_queues_generation,
)

logger = logging.getLogger(__name__)

# The longest a worker waits before asking again for a slot of a saturated tenant it parks tasks of.
PARKED_RETRY_MAX_SECONDS = 0.5
# How often a worker parking tasks checks whether their tenants are being deleted.
CLOSED_CHECK_SECONDS = 0.5


def _tenants_concurrency() -> dict[str, int]:
    from tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        return dict(Tenant.objects.values_list("schema_name", "concurrency"))


def _tenant_concurrency(schema_name: str) -> int | None:
    from tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        return Tenant.objects.filter(schema_name=schema_name).values_list("concurrency", flat=True).first()


@dataclass
class _Parked:
    request: object
    since: float = field(default_factory=time.monotonic)


class TenantSlotGate:
    """Lives in a worker's main process: lets a tenant's task reach the pool only with one of its slots."""

    def __init__(self, consumer, dispatch, follower: "TenantQueueFollower"):
        self.consumer = consumer
        self.dispatch = dispatch  # the worker's own on_task_request: hands a request to the pool
        self.follower = follower
        self.leases: dict[object, tuple[str, str]] = {}  # request -> (schema, token), while it runs
        self.parked: dict[str, deque[_Parked]] = {}  # schema -> its tasks waiting for a slot, in order
        self.limits: dict[str, int] = {}  # database limits read when Redis lacked one; cleared on changes
        self.retry_at: dict[str, float] = {}  # schema -> when to ask again for a slot for its parked tasks
        self.retry_delay: dict[str, float] = {}
        self.next_closed_check = 0.0
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

    def _fallback_limit(self, schema_name: str):
        # Called only when Redis lost the tenant's limit (flushed, restarted): one database read per tenant,
        # remembered until the tenants generation changes.
        def read() -> int:
            from tenants.models import DEFAULT_TENANT_CONCURRENCY

            if schema_name not in self.limits:
                try:
                    self.limits[schema_name] = _tenant_concurrency(schema_name) or DEFAULT_TENANT_CONCURRENCY
                finally:
                    connection.close()  # the main process must not hold a connection its children inherit
            return self.limits[schema_name]

        return read

    def is_paused(self, schema_name: str) -> bool:
        return schema_name in self.parked

    def _slot_acquire(self, schema_name: str, token: str) -> int:
        """tenant_slot_acquire, or SATURATED while Redis (or, for a lost limit, the database) is unreachable.

        This runs inside the consumer's message callback: an exception here would stop the worker (Celery
        treats what is not a *broker* connection error as unrecoverable, and Redis is not the broker). A
        task that cannot ask is parked like one whose tenant is full, and asked for again with back-off."""
        try:
            return tenant_slot_acquire(
                schema_name=schema_name, token=token, fallback_limit=self._fallback_limit(schema_name)
            )
        except Exception:
            logger.warning("could not ask for a slot of %s; parking its tasks until Redis answers", schema_name,
                           exc_info=True)  # fmt: skip
            return SATURATED

    def _acquire(self, schema_name: str, request) -> int:
        token = f"{self.consumer.hostname}:{request.id}:{uuid.uuid4().hex[:8]}"
        outcome = self._slot_acquire(schema_name, token)
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
            self.follower.cancel([schema_name])

    def _resume(self, schema_name: str) -> None:
        if schema_name in self.follower.tenants:  # still a tenant, as of the last reconcile (which adds it otherwise)
            self.follower.consume([schema_name])

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
        processes = self.consumer.controller.concurrency if self.consumer.controller else 1
        park_max_seconds = settings.TENANT_PARK_MAX_SECONDS
        now = time.monotonic()
        if self.parked and now >= self.next_closed_check:
            # Tenants being deleted: drop what waits for them, whether or not a process is free here.
            self.next_closed_check = now + CLOSED_CHECK_SECONDS
            for schema_name in concurrency.tenant_slots_is_closed(schema_names=list(self.parked)):
                while schema_name in self.parked:
                    self._drop(self._unpark(schema_name, resume=False).request, schema_name)
        for schema_name in list(self.parked):
            if self.retry_at.get(schema_name, 0.0) > now:
                continue
            while schema_name in self.parked:
                head = self.parked[schema_name][0]
                if now - head.since > park_max_seconds:
                    # Parked too long: back to its queue before RabbitMQ's consumer_timeout closes our channel.
                    self._unpark(schema_name)
                    if concurrency.tenant_slots_is_closed(schema_names=[schema_name]):
                        self._drop(head.request, schema_name)  # its queue is gone: do not bring it back
                    else:
                        head.request.reject(requeue=True)
                        worker_state.task_ready(head.request)
                    continue
                if self._busy_processes() >= processes:
                    return  # no free process here: a slot taken now would sit idle
                token = f"{self.consumer.hostname}:{head.request.id}:{uuid.uuid4().hex[:8]}"
                outcome = self._slot_acquire(schema_name, token)
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


class TenantQueueFollower:
    """Keeps the worker consuming `platform` plus every open tenant's queue (see the module docstring)."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.gate: TenantSlotGate | None = None
        self.tenants: set[str] = set()  # open tenants (not being deleted), as of the last reconcile
        self.generation: int | None = None
        self.next_full_sync = 0.0
        self.is_starting = False

    def start(self) -> None:
        """At the consumer's start (and restart after a lost connection): adds every tenant queue without
        consuming yet. Celery's event loop starts consuming them all once it has its message callback; a
        message delivered before that (a backlog waiting in a queue) would reach a consumer that has no
        callback, which raises and leaves the delivery unacknowledged on the channel."""
        self.generation = None
        self.next_full_sync = 0.0
        self.is_starting = True
        try:
            self.tick()
        finally:
            self.is_starting = False

    def stop(self) -> None:
        # Celery re-creates the task consumer on a reconnection with every selected queue and declares them
        # one round trip at a time; left to us, start() declares them in one batch instead.
        # Every selected tenant queue, not only the tenants known now: a queue whose cancel did not finish (its
        # tenant deleted meanwhile) must not be declared again by the restart.
        queues = self.consumer.app.amqp.queues
        queues.deselect([name for name in list(queues.consume_from or ()) if name.startswith(TENANT_QUEUE_PREFIX)])

    # The timer, every TENANT_QUEUE_SYNC_SECONDS: one Redis GET while nothing changed.
    def tick(self) -> None:
        try:
            generation = tenant_queues_generation()
            now = time.monotonic()
            full = now >= self.next_full_sync
            if generation == self.generation and not full:
                return
            self.reconcile(generation=generation, full=full)
            if full:
                self.next_full_sync = now + settings.TENANT_QUEUE_FULL_SYNC_SECONDS
        except Exception:  # the database or Redis may be down for a while; keep consuming what we have
            logger.warning("tenant queues: could not reconcile with the tenants", exc_info=True)
        finally:
            # The worker's main process must not hold a connection its forked children could inherit.
            connection.close()

    def reconcile(self, *, generation: int, full: bool) -> None:
        """Reads the tenants table and consumes exactly the open tenants' queues; on a full reconcile it also
        rewrites the limits Redis lost or holds wrong (a write that failed while Redis was away)."""
        # Redis's cached limits are read before the database, so the compare-and-set below never overwrites
        # a limit a PUT wrote after our database read (tenants.concurrency).
        cached = concurrency.tenant_concurrency_limits_cached(schema_names=sorted(self.tenants)) if full else {}
        limits = _tenants_concurrency()
        closed = concurrency.tenant_slots_is_closed(schema_names=list(limits))
        open_limits = {name: limit for name, limit in limits.items() if name not in closed}
        if full:
            # A tenant first seen now was not read before the database: only fill its limit if Redis lost it.
            unseen = [name for name in open_limits if name not in cached]
            unseen_cached = concurrency.tenant_concurrency_limits_cached(schema_names=unseen)
            cached.update({name: None for name, value in unseen_cached.items() if value is None})
            concurrency.tenant_concurrency_limits_reconcile(
                limits={name: limit for name, limit in open_limits.items() if name in cached}, cached_before=cached
            )
        first = self.generation is None
        self.generation = generation
        self.tenants = set(open_limits)
        if self.gate is not None:
            self.gate.limits.clear()  # a limit may have changed: read again when needed
        # A tenant being deleted is not consumed any more; one at its concurrency limit is paused by the gate.
        wanted = {name for name in self.tenants if self.gate is None or not self.gate.is_paused(name)}
        consumed = {
            queue.name[len(TENANT_QUEUE_PREFIX) :]
            for queue in self.consumer.task_consumer.queues
            if queue.name.startswith(TENANT_QUEUE_PREFIX)
        }
        self.consume(sorted(wanted - consumed), announce=first)
        self.cancel(sorted(consumed - wanted))

    def consume(self, schema_names: list[str], *, announce: bool = False) -> None:
        """Starts consuming these tenants' queues: declared without waiting for each reply, consumed at once
        (at the consumer's start, by Celery's event loop: see `start`)."""
        task_consumer = self.consumer.task_consumer
        queues = self.consumer.app.amqp.queues
        names = [tenant_queue_name(name) for name in schema_names]
        names = [name for name in names if not task_consumer.consuming_from(name)]
        started = time.monotonic()
        # Declaring is idempotent, and a queue that exists already (published to first) is kept as it is.
        # kombu's Consumer would declare each queue with three round trips (exchange, queue, binding).
        auto_declare, task_consumer.auto_declare = task_consumer.auto_declare, False
        try:
            for name in names:
                queue = queues.select_add(queues[name])
                queue(task_consumer.channel).declare(nowait=True)
                task_consumer.add_queue(queue)
        finally:
            task_consumer.auto_declare = auto_declare
        if names and not self.is_starting:
            task_consumer.consume()  # waits for the broker to confirm the last consumer, so for every declare
        elif names:
            # Nothing is consumed yet, so nothing can be delivered while we wait: one round trip after the
            # declares returns once the broker has made every queue, which the logged time then includes.
            task_consumer.channel.queue_declare(queue=names[-1], passive=True)
        if announce or len(names) > 1:
            # The start's cost grows with the tenants (docs/architecture.md): say what it was.
            logger.info("tenant queues: started consuming %d queues in %.1f s", len(names), time.monotonic() - started)
        elif names:
            logger.info("Started consuming from %s", names[0])

    def cancel(self, schema_names: list[str]) -> None:
        names = [tenant_queue_name(name) for name in schema_names]
        # Every queue leaves the worker's selection before any consumer is cancelled. A cancel can fail halfway:
        # RabbitMQ cancels the consumers of a deleted tenant's queue itself, and that notice arriving while we wait
        # for our own cancel's reply makes Celery restart the connection. The restart declares again every queue
        # still selected, a deleted tenant's among them, whose missing exchange then stopped the worker for good
        # (NotFound at Queue.bind: "Unrecoverable error").
        queues = self.consumer.app.amqp.queues
        for name in names:
            queues.deselect(name)
        for name in names:
            self.consumer.cancel_task_queue(name)


class TenantWorkerStep(bootsteps.StartStopStep):
    """Worker consumer step: follows the tenants' queues and installs the slot gate in front of the pool."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.follower = TenantQueueFollower(parent)
        # Wrapped here, before the task strategies capture `on_task_request` when the Tasks step starts.
        self.gate = TenantSlotGate(parent, parent.on_task_request, self.follower)
        self.follower.gate = self.gate
        parent.on_task_request = self.gate.on_task_request
        self.timer_entries: list = []

    def start(self, consumer):
        self.follower.start()
        self.timer_entries = [
            consumer.timer.call_repeatedly(settings.TENANT_SLOT_POLL_SECONDS, self.gate.tick, priority=5),
            consumer.timer.call_repeatedly(settings.TENANT_QUEUE_SYNC_SECONDS, self.follower.tick, priority=10),
        ]

    def stop(self, consumer):
        for entry in self.timer_entries:
            entry.cancel()
        self.timer_entries = []
        self.gate.forget_parked()
        self.follower.stop()

    def shutdown(self, consumer):
        self.stop(consumer)
