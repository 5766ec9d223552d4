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


def tenant_queue_close(*, schema_name: str) -> None:
    """Stops every worker consuming the tenant's queue, then deletes the queue and what waits in it."""
    from sociomile.celery import app

    queue_name = tenant_queue_name(schema_name)
    app.control.cancel_consumer(queue_name, reply=False)
    with app.connection_for_write() as broker:
        broker.default_channel.queue_delete(queue_name)


def tenant_queue_depth(*, schema_name: str) -> int:
    """Messages waiting in the tenant's queue (not counting those a worker has reserved)."""
    from sociomile.celery import app

    with app.connection_for_read() as broker:
        return broker.default_channel.client.llen(tenant_queue_name(schema_name))


def _active_tenant_schema_names() -> list[str]:
    from tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        return list(Tenant.objects.values_list("schema_name", flat=True))


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
        try:
            wanted = {tenant_queue_name(name) for name in _active_tenant_schema_names()}
        except Exception:  # the database may be down for a while; keep consuming what we have
            logger.warning("tenant queue sync: could not read the tenants table", exc_info=True)
            return
        finally:
            # The worker's main process must not hold a connection its forked children could inherit.
            connection.close()
        consumed = {queue.name for queue in consumer.task_consumer.queues}
        for queue_name in sorted(wanted - consumed):
            consumer.add_task_queue(queue_name)
        for queue_name in sorted(consumed - wanted):
            if queue_name.startswith(TENANT_QUEUE_PREFIX):
                consumer.cancel_task_queue(queue_name)
