"""Delivery through real worker processes: the run sent on commit delivers, and a worker SIGKILLed mid-send
loses nothing (the delivery comes back, once its lease ends, with the same webhook-id)."""

import os
import signal
import socket
import uuid

import pytest
from django.db import connection
from django_tenants.utils import schema_context
from standardwebhooks import Webhook

from core.tests.fixtures.workers import WorkerProcess
from core.tests.support import wait_for
from events import services as event_services
from events.models import Delivery
from events.services import event_record, webhook_endpoint_create
from live_stack import child_pids
from sociomile.celery import app
from tenants.work import tenant_work_dispatch

pytestmark = pytest.mark.worker


def test_an_event_committed_is_delivered_by_a_live_worker(make_live_tenant, celery_worker, event_receiver):
    tenant = make_live_tenant("evt")
    with schema_context(tenant.schema_name):
        endpoint = webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})  # autocommit: committed, the run sent on commit

        wait_for(lambda: Delivery.objects.filter(status="succeeded").count() == 1, timeout=30, message="the delivery")
        [request] = event_receiver.received()
        assert Webhook(endpoint.secret).verify(request.body, request.headers)["data"] == {"n": 1}


def test_a_worker_killed_mid_send_loses_nothing(make_live_tenant, celery_worker, event_receiver, settings, monkeypatch):
    # given a worker of its own (short delivery lease, long request timeout, one request at a time) that alone
    # gets the tenant's first run (on a queue only it consumes), and a receiver that holds that first request
    # open while the second delivery, claimed with it, waits in the run's pipeline
    queue = f"events-victim-{uuid.uuid4().hex[:6]}"
    victim = WorkerProcess(
        name=f"victim-{uuid.uuid4().hex[:6]}", concurrency=1,
        extra_env={"EVENTS_LEASE_SECONDS": "3", "EVENTS_HTTP_TIMEOUT_SECONDS": "60", "EVENTS_ENDPOINT_CONCURRENCY": "1"},
    )  # fmt: skip
    try:
        node = f"{victim.name}@{socket.gethostname()}"
        assert app.control.add_consumer(queue, destination=[node], reply=True, timeout=10)
        tenant = make_live_tenant("evtkill")
        settings.TENANT_WORK_GRACE_SECONDS = 0  # the safety net's mark is due at once
        monkeypatch.setattr(event_services, "_deliveries_task_send", lambda schema_name: None)  # no fast path here
        event_receiver.script(None)
        with schema_context(tenant.schema_name):
            endpoint = webhook_endpoint_create(url=event_receiver.url, events=["*"])
            event_record(type="chat.sla_breached", data={"n": 1})
            event_record(type="chat.sla_breached", data={"n": 2})
            app.send_task("events.tasks.webhook_deliveries_send_task", queue=queue)
        assert event_receiver.arrived.wait(30), "the victim's request"

        # when the worker is killed outright mid-send
        for pid in [victim.process.pid, *child_pids(victim.process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        victim.process.wait(timeout=10)
    finally:
        victim.stop()
    event_receiver.released.set()

    # then the dispatcher (the tenant's `webhooks` mark) sends a run to a live worker, which sends it again
    # once the lease is over: both delivered, the first with the same webhook-id again and a valid signature,
    # the second (never sent by the victim) once
    def delivered() -> bool:
        connection.set_schema_to_public()
        tenant_work_dispatch()
        with schema_context(tenant.schema_name):
            return Delivery.objects.filter(status="succeeded").count() == 2

    wait_for(delivered, timeout=45, interval=0.5, message="the deliveries after the kill")
    received = event_receiver.received()
    with schema_context(tenant.schema_name):
        first, second = Delivery.objects.order_by("event_id")
        # the victim's request first; then the live run's two, in either order: events of no chat have no order
        # between them, and the run sends both at once
        assert received[0].headers["webhook-id"] == first.event.webhook_id
        again = sorted(received[1:], key=lambda request: request.headers["webhook-id"] != first.event.webhook_id)
        assert [r.headers["webhook-id"] for r in again] == [first.event.webhook_id, second.event.webhook_id]
        assert Webhook(endpoint.secret).verify(again[0].body, again[0].headers)["data"] == {"n": 1}
        assert Webhook(endpoint.secret).verify(again[1].body, again[1].headers)["data"] == {"n": 2}
        assert (first.status, first.attempt_log.count()) == ("succeeded", 1)  # the victim's attempt left no row
        assert (second.status, second.attempt_log.count()) == ("succeeded", 1)
    assert victim.process.returncode == -signal.SIGKILL
