"""The worker's tenant-queue following (tenants/worker.py): O(1) while tenants do not change, every tenant's
queue consumed at scale, a new tenant served at once."""

import socket
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from core.tests.fixtures.workers import WorkerProcess

from core.tests.support import api_client, make_user, token_for, wait_for
from conversations.models import InboundEvent
from core.models import User
from sociomile.celery import app
from tenants.models import Tenant
from tenants.queues import tenant_queue_close, tenant_queue_name, tenant_queues_changed, tenant_queues_generation
from tenants.worker import TenantQueueFollower


class _Recorded:
    """The follower's consume/cancel calls, recorded instead of sent to a worker's consumer."""

    def __init__(self):
        self.consumed: list[list[str]] = []
        self.cancelled: list[list[str]] = []


def _follower(monkeypatch, recorded: _Recorded, *, consumed: list[str]) -> TenantQueueFollower:
    class Consumer:
        class task_consumer:  # noqa: N801 (stands in for kombu's Consumer: only its queue list is read)
            queues = [type("Queue", (), {"name": tenant_queue_name(name)})() for name in consumed]

    follower = TenantQueueFollower(Consumer())
    monkeypatch.setattr(follower, "consume", lambda names, announce=False: recorded.consumed.append(names))
    monkeypatch.setattr(follower, "cancel", lambda names: recorded.cancelled.append(names))
    return follower


def test_a_tick_reads_no_table_while_tenants_do_not_change_and_reconciles_when_they_do(
    session_tenants, live_db, django_assert_num_queries, monkeypatch, settings
):
    settings.TENANT_QUEUE_FULL_SYNC_SECONDS = 3600
    recorded = _Recorded()
    follower = _follower(monkeypatch, recorded, consumed=["alpha"])
    # given a follower that reconciled once (at start: it consumes alpha's queue and adds beta's)
    follower.start()
    connection.set_schema_to_public()
    assert recorded.consumed == [["beta"]] and recorded.cancelled == [[]]
    assert follower.tenants >= {"alpha", "beta"}

    # when it ticks while no tenant is created, deleted or given a new limit
    with django_assert_num_queries(0):
        for _ in range(20):
            follower.tick()

    # then it read no table and changed nothing (one Redis GET a tick)
    assert recorded.consumed == [["beta"]]

    # when a change is announced, the next tick reconciles (one read of the tenants table)
    tenant_queues_changed()
    with CaptureQueriesContext(connection) as queries:
        follower.tick()
    assert len([query for query in queries if '"tenants_tenant"' in query["sql"]]) == 1
    assert follower.generation == tenant_queues_generation()
    assert len(recorded.consumed) == 2


@pytest.mark.worker
def test_a_worker_consumes_every_tenant_queue_of_hundreds_and_serves_a_new_tenant_at_once(live_db, make_live_tenant):
    # given 300 tenants (rows only: following queues needs no schema) before a worker starts
    prefix = f"many{uuid.uuid4().hex[:4]}"
    slugs = [f"{prefix}-{index:03d}" for index in range(300)]
    Tenant.objects.bulk_create([Tenant(schema_name=slug, name=slug) for slug in slugs])
    tenant_queues_changed()
    worker = WorkerProcess(name=f"many-{uuid.uuid4().hex[:6]}", concurrency=1)
    try:
        # when it has started
        node = f"{worker.name}@{socket.gethostname()}"
        replies = app.control.inspect(destination=[node], timeout=5).active_queues() or {}
        consumed = {queue["name"] for queues in replies.values() for queue in queues}

        # then it consumes each of their queues, and says what the start cost
        assert {tenant_queue_name(slug) for slug in slugs} <= consumed
        started = [line for line in worker.log().splitlines() if "tenant queues: started consuming" in line]
        assert len(started) == 1
        assert int(started[0].split("started consuming ")[1].split()[0]) >= 300

        # and a tenant created now is served at once (provisioning's broadcast reaches this worker too)
        tenant = make_live_tenant("fresh")
        platform = api_client(token=token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None))
        response = platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": 1}})
        assert response.status_code == 202

        def persisted():
            with schema_context(tenant.schema_name):
                return InboundEvent.objects.count() == 1

        wait_for(persisted, timeout=10, message="the new tenant's event")
        assert f"Started consuming from {tenant_queue_name(tenant.schema_name)}" in worker.log()
    finally:
        worker.stop()
        Tenant.objects.filter(schema_name__in=slugs).delete()
        tenant_queues_changed()
        for slug in slugs:
            tenant_queue_close(schema_name=slug)


def test_provisioning_tells_workers_through_the_generation_when_the_broker_is_unreachable(monkeypatch, caplog):
    from kombu.exceptions import OperationalError

    from tenants.queues import tenant_queue_open, tenant_queue_stop

    def unreachable(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    # given a broker that refuses the broadcast
    monkeypatch.setattr(app.control, "add_consumer", unreachable)
    monkeypatch.setattr(app.control, "cancel_consumer", unreachable)
    before = tenant_queues_generation()

    # when a committed tenant's queue is opened, then stopped
    tenant_queue_open(schema_name="unreachable-broker")
    tenant_queue_stop(schema_name="unreachable-broker")

    # then neither fails the caller; workers learn it from the generation, and the log says so
    assert tenant_queues_generation() == before + 2
    assert caplog.text.count("broker unreachable: workers learn about tenant.unreachable-broker") == 2


def test_a_cancel_that_fails_halfway_leaves_none_of_its_queues_selected_for_the_restart():
    # given a worker consuming three tenants' queues, whose second cancel fails as it does when RabbitMQ cancels a
    # deleted tenant's consumers while we wait for our own cancel's reply (Celery then restarts the connection)
    from amqp.exceptions import ConsumerCancelled
    from celery.app.amqp import Queues
    from kombu import Queue

    names = [f"gone-{index}" for index in range(3)]
    queues = Queues()
    for name in names:
        queues.select_add(Queue(tenant_queue_name(name)))
    cancelled = []

    class Consumer:
        app = type("App", (), {"amqp": type("Amqp", (), {"queues": queues})()})()

        def cancel_task_queue(self, queue_name):
            queues.deselect(queue_name)  # as Celery's does, before its cancel
            if len(cancelled) == 1:
                raise ConsumerCancelled("the broker cancelled a deleted queue's consumer", (60, 30))
            cancelled.append(queue_name)

    follower = TenantQueueFollower(Consumer())

    # when the follower cancels the three
    with pytest.raises(ConsumerCancelled):
        follower.cancel(names)

    # then none is left selected: the restart declares none of them (a deleted one would stop the worker)
    assert not set(queues.consume_from) & {tenant_queue_name(name) for name in names}


def test_a_parked_task_of_a_tenant_being_deleted_is_dropped():
    # given a task parked (its tenant was at its concurrency limit), then its tenant closed for deletion
    from collections import deque

    from tenants.concurrency import tenant_slots_close, tenant_slots_forget
    from tenants.worker import TenantSlotGate, _Parked

    schema_name = f"closing-{uuid.uuid4().hex[:8]}"

    class Consumer:
        controller = None

        class qos:  # noqa: N801
            @staticmethod
            def decrement_eventually():
                pass

    gate = TenantSlotGate(Consumer(), dispatch=lambda request: None, follower=None)
    request = object()
    gate.parked[schema_name] = deque([_Parked(request)])
    dropped = []
    gate._drop = lambda request, schema: dropped.append((request, schema))
    tenant_slots_close(schema_name=schema_name)
    try:
        # when the gate looks at its parked tasks
        gate._retry_parked()
    finally:
        tenant_slots_forget(schema_name=schema_name)

    # then the task is dropped, not kept waiting for a tenant that is going away
    assert dropped == [(request, schema_name)] and schema_name not in gate.parked


def test_a_restart_selects_no_tenant_queue_even_one_of_a_tenant_no_longer_known():
    # given a selected queue of a tenant the follower no longer lists (deleted before its cancel finished)
    from celery.app.amqp import Queues
    from kombu import Queue

    queues = Queues()
    queues.select_add(Queue("platform"))
    queues.select_add(Queue(tenant_queue_name("known")))
    queues.select_add(Queue(tenant_queue_name("deleted-meanwhile")))

    class Consumer:
        app = type("App", (), {"amqp": type("Amqp", (), {"queues": queues})()})()

    follower = TenantQueueFollower(Consumer())
    follower.tenants = {"known"}

    # when the connection restarts (the step stops before Celery re-creates its task consumer)
    follower.stop()

    # then only the platform's queue is declared again; the follower's start adds the tenants that still exist
    assert list(queues.consume_from) == ["platform"]
