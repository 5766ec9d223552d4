"""Each tenant's own Celery queue: its name, routing tasks to it, and workers following tenants live.

A task sent inside a tenant's context carries the `_schema_name` header (tenant-schemas-celery) and is
routed to `tenant.<slug>`. Every worker consumes the `platform` queue plus one queue per tenant:
`TenantQueuesStep` reconciles the consumed queues with the tenants table every
TENANT_QUEUE_SYNC_SECONDS, and provisioning broadcasts add/cancel so the change is seen at once.
Messages sent to a queue before any worker consumes it wait in Redis; nothing is lost in between.
"""

import logging

from celery import bootsteps
from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context

logger = logging.getLogger(__name__)

TENANT_QUEUE_PREFIX = "tenant."


def tenant_queue_name(schema_name: str) -> str:
    return f"{TENANT_QUEUE_PREFIX}{schema_name}"


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router: a task sent in a tenant's context goes to that tenant's queue."""
    schema_name = (options.get("headers") or {}).get("_schema_name")
    if schema_name and schema_name != get_public_schema_name():
        return {"queue": tenant_queue_name(schema_name)}
    return None


def tenant_queue_open(*, schema_name: str) -> None:
    """Tells every running worker to start consuming the tenant's queue now (the periodic sync would too)."""
    from sociomile.celery import app

    app.control.add_consumer(tenant_queue_name(schema_name), reply=False)


def tenant_queue_stop(*, schema_name: str) -> None:
    """Tells every running worker to stop consuming the tenant's queue now (what waits in it stays)."""
    from sociomile.celery import app

    app.control.cancel_consumer(tenant_queue_name(schema_name), reply=False)


def tenant_queue_close(*, schema_name: str) -> None:
    """Stops every worker consuming the tenant's queue, then deletes the queue and what waits in it."""
    from sociomile.celery import app

    tenant_queue_stop(schema_name=schema_name)
    queue_name = tenant_queue_name(schema_name)
    with app.connection_for_write() as broker:
        channel = broker.default_channel
        # kombu's queue_delete only deletes bindings this process declared (its in-memory state); the web
        # process deleting a tenant may never have published to it. So the lists (one per priority step)
        # and the queue's exchange binding are deleted by name.
        channel.queue_delete(queue_name)
        channel.client.delete(
            *[channel._q_for_pri(queue_name, priority) for priority in channel.priority_steps],
            channel.keyprefix_queue % queue_name,
        )


def tenant_queue_depths(*, schema_names: list[str]) -> dict[str, int]:
    """Messages waiting in each tenant's queue (not those a worker has reserved, parked or runs)."""
    from sociomile.celery import app

    if not schema_names:
        return {}
    with app.connection_for_read() as broker:
        channel = broker.default_channel
        # kombu keeps one Redis list per priority step of a queue; a task without a priority uses the first.
        with channel.client.pipeline(transaction=False) as pipe:
            for name in schema_names:
                for priority in channel.priority_steps:
                    pipe.llen(channel._q_for_pri(tenant_queue_name(name), priority))
            lengths = pipe.execute()
    steps = len(channel.priority_steps)
    return {name: sum(lengths[index * steps : (index + 1) * steps]) for index, name in enumerate(schema_names)}


def tenant_queue_depth(*, schema_name: str) -> int:
    return tenant_queue_depths(schema_names=[schema_name])[schema_name]


def _tenant_concurrency_limits() -> dict[str, int]:
    from tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        return dict(Tenant.objects.values_list("schema_name", "concurrency"))


class TenantQueuesStep(bootsteps.StartStopStep):
    """Worker consumer step: consume every tenant's queue, following tenants as they come and go."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_entry = None

    def start(self, consumer):
        self.sync(consumer)
        self.timer_entry = consumer.timer.call_repeatedly(
            settings.TENANT_QUEUE_SYNC_SECONDS, self.sync, (consumer,), priority=10
        )

    def stop(self, consumer):
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def sync(self, consumer):
        from tenants import concurrency

        gate = getattr(consumer, "tenant_slot_gate", None)
        try:
            # Redis's cached limits are read before the database, so the compare-and-set below never
            # overwrites a limit a PUT wrote after our database read (tenants.concurrency).
            cached = concurrency.tenant_concurrency_limits_cached(schema_names=list(gate.limits) if gate else [])
            limits = _tenant_concurrency_limits()
            closed = concurrency.tenant_slots_is_closed(schema_names=list(limits))
            open_limits = {name: limit for name, limit in limits.items() if name not in closed}
            # A tenant first seen now was not read before the database: only fill its limit if Redis lost it.
            unseen = [name for name in open_limits if name not in cached]
            unseen_cached = concurrency.tenant_concurrency_limits_cached(schema_names=unseen)
            cached.update({name: None for name, value in unseen_cached.items() if value is None})
            concurrency.tenant_concurrency_limits_reconcile(
                limits={name: limit for name, limit in open_limits.items() if name in cached}, cached_before=cached
            )
        except Exception:  # the database or Redis may be down for a while; keep consuming what we have
            logger.warning("tenant queue sync: could not read the tenants", exc_info=True)
            return
        finally:
            # The worker's main process must not hold a connection its forked children could inherit.
            connection.close()
        if gate is not None:
            gate.limits = open_limits
        # A tenant being deleted is not consumed any more; one at its concurrency limit is paused by the gate.
        wanted = {
            tenant_queue_name(name) for name in open_limits if gate is None or not gate.is_paused(name)
        }
        consumed = {queue.name for queue in consumer.task_consumer.queues}
        for queue_name in sorted(wanted - consumed):
            consumer.add_task_queue(queue_name)
        for queue_name in sorted(consumed - wanted):
            if queue_name.startswith(TENANT_QUEUE_PREFIX):
                consumer.cancel_task_queue(queue_name)
