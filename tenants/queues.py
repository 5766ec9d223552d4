"""Each tenant's own Celery queue: its name, routing tasks to it, and opening, closing and measuring it.

A task sent inside a tenant's context carries the `_schema_name` header (tenant-schemas-celery) and is
routed to `tenant.<slug>`, a durable RabbitMQ queue (declared by whoever publishes to it first, so a
message sent before any worker consumes the queue waits in it). Every worker consumes the `platform`
queue plus one queue per tenant; how it follows tenants as they come and go is tenants/worker.py.
Provisioning and deletion broadcast add/cancel so workers react at once, and bump the tenants
generation (`tenant_queues_changed`), which workers read on every tick to know whether to re-read the
tenants table at all.
"""

import logging
from importlib import import_module

from amqp.exceptions import NotFound, RecoverableConnectionError
from django_tenants.utils import get_public_schema_name
from kombu.exceptions import OperationalError

from core.redis import get_redis

logger = logging.getLogger(__name__)

TENANT_QUEUE_PREFIX = "tenant."
# A platform key (not one tenant's): "_" cannot start a slug, so it names no tenant.
_GENERATION_KEY = "sociomile:_tenants:generation"


# What a publish raises once Celery's own retries could not reach the broker.
BROKER_UNAVAILABLE_ERRORS = (OperationalError, RecoverableConnectionError)


def tenant_queue_name(schema_name: str) -> str:
    return f"{TENANT_QUEUE_PREFIX}{schema_name}"


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router: a task sent in a tenant's context goes to that tenant's queue."""
    schema_name = (options.get("headers") or {}).get("_schema_name")
    if schema_name and schema_name != get_public_schema_name():
        return {"queue": tenant_queue_name(schema_name)}
    return None


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


def task_wake(task, *args) -> bool:
    """Sends a task whose work is already stored elsewhere (queued creations in Redis, rows a run reads),
    only to start it sooner. With the broker unreachable that is logged, not raised: what was accepted
    stays accepted (a 202 is not turned into an error after the fact), and the safety-net sweep finds the
    work once the broker is back. Returns whether the task was sent."""
    try:
        task.delay(*args)
    except BROKER_UNAVAILABLE_ERRORS:
        logger.warning("broker unreachable: %s not sent; the sweep will find its work", task.name, exc_info=True)
        return False
    return True


def task_wake_by_name(name: str) -> bool:
    """task_wake for a task another app owns, by its registered name (an app whose services must not import
    the owner's tasks module at import time). The module is imported first: autodiscovered tasks are
    registered only once their module is imported, which a worker does at start but a web process or a
    management command may not have done yet (`tenant_export`, run alone, got NotRegistered)."""
    from celery import current_app

    import_module(name.rpartition(".")[0])
    return task_wake(current_app.tasks[name])


def tenant_queues_changed() -> None:
    """Tells every worker the set of tenants (or a tenant's limit) changed: it reconciles at its next tick."""
    get_redis().incr(_GENERATION_KEY)


def tenant_queues_generation() -> int:
    """A number that changes whenever tenants are created, deleted or given a new concurrency limit."""
    return int(get_redis().get(_GENERATION_KEY) or 0)


def _broadcast(command, queue_name: str) -> None:
    # Only a shortcut: the generation bumped before it makes every worker reconcile within
    # TENANT_QUEUE_SYNC_SECONDS anyway. So a broker outage here is logged, and never fails a tenant's
    # creation or deletion that has already committed.
    try:
        command(queue_name, reply=False)
    except BROKER_UNAVAILABLE_ERRORS:
        logger.warning("broker unreachable: workers learn about %s at their next reconcile", queue_name, exc_info=True)


def tenant_queue_open(*, schema_name: str) -> None:
    """Tells every running worker to start consuming the tenant's queue now (its next reconcile would too)."""
    from sociomile.celery import app

    tenant_queues_changed()
    _broadcast(app.control.add_consumer, tenant_queue_name(schema_name))


def tenant_queue_stop(*, schema_name: str) -> None:
    """Tells every running worker to stop consuming the tenant's queue now (what waits in it stays)."""
    from sociomile.celery import app

    tenant_queues_changed()
    _broadcast(app.control.cancel_consumer, tenant_queue_name(schema_name))


def tenant_queue_close(*, schema_name: str) -> None:
    """Stops every worker consuming the tenant's queue, then deletes the queue, what waits in it, and its
    exchange (Celery makes one direct exchange per queue it creates)."""
    from sociomile.celery import app

    tenant_queue_stop(schema_name=schema_name)
    queue_name = tenant_queue_name(schema_name)
    try:
        with app.connection_for_write() as broker:
            # A deleted queue takes its messages and bindings with it; deleting a missing one is no error.
            channel = broker.default_channel
            channel.queue_delete(queue_name)
            channel.exchange_delete(queue_name)
    except (*BROKER_UNAVAILABLE_ERRORS, ConnectionError):
        # Called once the tenant is gone (after commit): its queue is left behind, unconsumed; say which.
        logger.warning("broker unreachable: queue %s of a deleted tenant was not deleted", queue_name, exc_info=True)


def tenant_queue_depths(*, schema_names: list[str]) -> dict[str, int]:
    """Messages waiting in each tenant's queue (not those a worker has reserved, parked or runs).

    One passive declare per queue on one channel; a queue nobody declared yet holds nothing (0). RabbitMQ
    closes a channel on a passive declare of a missing queue, so the next queue gets a new channel."""
    from sociomile.celery import app

    depths: dict[str, int] = {}
    if not schema_names:
        return depths
    with app.connection_for_read() as broker:
        channel = None
        try:
            for name in schema_names:
                if channel is None:
                    channel = broker.channel()
                try:
                    depths[name] = channel.queue_declare(tenant_queue_name(name), passive=True).message_count
                except NotFound:
                    depths[name] = 0
                    channel = None
        finally:
            if channel is not None:
                channel.close()
    return depths


def tenant_queue_depth(*, schema_name: str) -> int:
    return tenant_queue_depths(schema_names=[schema_name])[schema_name]


def tenant_queue_exists(*, schema_name: str) -> bool:
    """Whether the broker has the tenant's queue (after deletion it must not)."""
    from sociomile.celery import app

    with app.connection_for_read() as broker:
        channel = broker.channel()
        try:
            channel.queue_declare(tenant_queue_name(schema_name), passive=True)
        except NotFound:
            return False
        channel.close()
        return True
