"""Each tenant's own queue, consumed by real worker processes that follow tenants being created and deleted."""

import pytest
from django_tenants.utils import schema_context

from core.tests.support import api_client, make_user, token_for, wait_for
from conversations.models import InboundEvent
from core.models import User
from core.redis import get_redis
from sociomile.celery import app
from tenants.queues import route_task, tenant_queue_exists, tenant_queue_name


def test_tasks_sent_in_a_tenant_context_go_to_the_tenant_queue():
    assert route_task("x", (), {}, {"headers": {"_schema_name": "acme"}}) == {"queue": "tenant.acme"}
    assert route_task("x", (), {}, {"headers": {"_schema_name": "public"}}) is None
    assert route_task("x", (), {}, {}) is None


def _consumed_queues(worker_name: str) -> set[str]:
    replies = app.control.inspect(destination=[worker_name], timeout=2).active_queues() or {}
    return {queue["name"] for queues in replies.values() for queue in queues}


@pytest.mark.worker
def test_event_published_for_a_tenant_created_after_the_worker_started_runs_in_its_schema(celery_worker, make_live_tenant):
    # given a running worker, then two tenants created after it started
    tenant = make_live_tenant("late")
    other = make_live_tenant("other")
    platform = api_client(token=token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None))

    # when an event is published to the first one
    response = platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"kind": "hello", "n": 1}})

    # then the worker persists it in that tenant's schema, and only there
    assert response.status_code == 202
    event_id = response.json()["id"]
    listed = wait_for(
        lambda: platform.get(f"/api/tenants/{tenant.id}/messages").json()["data"], message="the event to be persisted"
    )
    assert [(item["id"], item["payload"]) for item in listed] == [(event_id, {"kind": "hello", "n": 1})]
    with schema_context(other.schema_name):
        assert InboundEvent.objects.count() == 0
    assert platform.get(f"/api/tenants/{other.id}/messages").json() == {"data": [], "next_cursor": None}
    assert f"[{tenant.schema_name}]" in celery_worker.log()


@pytest.mark.worker
def test_worker_stops_consuming_a_deleted_tenant_and_its_queue_is_removed(celery_worker, make_live_tenant):
    from tenants.services import tenant_delete

    # given a tenant whose queue the worker consumes, with a message waiting nowhere else
    tenant = make_live_tenant("doomed")
    queue = tenant_queue_name(tenant.schema_name)
    wait_for(lambda: queue in _consumed_queues(celery_worker.name + "@" + _hostname()), message="the worker to consume the queue")

    # when the tenant is deleted
    tenant_delete(tenant=tenant)

    # then the worker cancels its consumer, the queue no longer exists in the broker, nor its semaphore in Redis
    wait_for(lambda: queue not in _consumed_queues(celery_worker.name + "@" + _hostname()), message="the consumer to be cancelled")
    assert not tenant_queue_exists(schema_name=tenant.schema_name)
    assert "Canceling queue " + queue in celery_worker.log()
    assert get_redis().keys(f"sociomile:{tenant.schema_name}:*") == []
    assert get_redis().exists(f"sociomile:_closed-tenants:{tenant.schema_name}")  # stragglers are dropped quietly


def _hostname() -> str:
    import socket

    return socket.gethostname()


@pytest.mark.worker
def test_many_events_are_each_persisted_exactly_once(celery_worker, make_live_tenant):
    tenant = make_live_tenant("burst")
    platform = api_client(token=token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None))

    accepted = [platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": n}}).json()["id"] for n in range(50)]

    def persisted():
        with schema_context(tenant.schema_name):
            return InboundEvent.objects.count() == 50

    wait_for(persisted, message="50 events")
    pages, cursor = [], None
    while True:
        page = platform.get(f"/api/tenants/{tenant.id}/messages?limit=20" + (f"&cursor={cursor}" if cursor else "")).json()
        pages.append(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    listed = [item for page in pages for item in page]
    assert [len(page) for page in pages] == [20, 20, 10]
    assert [item["id"] for item in listed] == accepted  # arrival order
    assert [item["payload"]["n"] for item in listed] == list(range(50))


def _sessions_opened() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # the statistics as of now, not as of this transaction's first read
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.worker
def test_a_worker_process_keeps_its_database_connection_from_task_to_task(celery_worker, make_live_tenant):
    """Celery's Django fixup closed the connection after every task, so every task (every drain turn) paid a
    new PostgreSQL connection and a new backend whose catalog caches were cold for every table it touched."""
    tenant = make_live_tenant("reuse")
    platform = api_client(token=token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None))
    platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": -1}})  # the worker's processes connect

    def persisted(count):
        with schema_context(tenant.schema_name):
            return InboundEvent.objects.count() == count

    wait_for(lambda: persisted(1), message="the first event")
    before = _sessions_opened()
    # when 30 tasks run, one after the other, on a worker with two processes
    for n in range(30):
        platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": n}})
        wait_for(lambda n=n: persisted(n + 2), message=f"event {n}")
    # then no task opened a connection of its own (the session's other processes may open a few meanwhile)
    assert _sessions_opened() - before < 10
