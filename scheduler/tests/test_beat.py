"""The real thing: `celery beat` (DatabaseScheduler) and a `celery worker` deliver through the webhook."""

import time

import pytest
from django_tenants.utils import schema_context

from core.tests.support import api_client, token_for, wait_for
from core.models import User
from scheduler.models import OutboundMessage


def _admin_api(tenant):
    with schema_context(tenant.schema_name):
        admin = User.objects.get(role=User.Role.ADMIN)
    return api_client(tenant=tenant, token=token_for(admin, tenant=tenant))


def _status(tenant, message_id: str) -> tuple:
    with schema_context(tenant.schema_name):
        return OutboundMessage.objects.values_list("status", "message_id").get(id=message_id)


def test_beat_has_one_dispatch_entry_and_the_outbound_run_goes_to_the_tenant_queue(tenant_a):
    # (Also makes pytest-django set up the test database when this module runs alone: it only does so
    # when some collected test asks for `db`, and `live_db` does not.)
    from django.conf import settings

    from scheduler.tasks import outbound_send_due_task
    from tenants.queues import route_task
    from tenants.tasks import tenant_work_dispatch_task
    from tenants.work import KIND_TASKS

    # one beat entry for every tenant's periodic work, naming a registered task
    assert [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()] == ["tenants.tasks.tenant_work_dispatch_task"]
    assert tenant_work_dispatch_task.name == "tenants.tasks.tenant_work_dispatch_task"
    # the outbound kind's task, sent in the tenant's context, goes to the tenant's queue
    assert KIND_TASKS["outbound"] == outbound_send_due_task.name
    headers = {"_schema_name": tenant_a.schema_name}
    assert route_task(outbound_send_due_task.name, (), {}, {"headers": headers}) == {"queue": f"tenant.{tenant_a.schema_name}"}


@pytest.mark.worker
def test_beat_and_worker_deliver_each_tenants_messages_and_stop_holds_one_tenant(
    celery_worker, celery_beat, make_live_tenant, webhook_receiver
):
    # given two tenants whose jobs run every second, each pointed at its own path of the receiver
    tenant_a, tenant_b = make_live_tenant("beat-a"), make_live_tenant("beat-b")
    api_a, api_b = _admin_api(tenant_a), _admin_api(tenant_b)
    for api, path in ((api_a, "/a"), (api_b, "/b")):
        response = api.patch("/api/scheduler", {"interval_seconds": 1, "webhook_url": webhook_receiver.url.replace("/hook", path)})
        assert response.status_code == 200

    # when a message is queued in A
    started = time.monotonic()
    first_a = api_a.post("/api/outbound-messages", {"to": "+15550000001", "content": "hello from A"}).json()["id"]

    # then beat's dispatcher sends a run in A's schema, on A's queue, and the worker delivers it within a few intervals
    wait_for(lambda: webhook_receiver.keys("/a") == [first_a], timeout=15, message="A's message to be delivered")
    delivered_after = time.monotonic() - started
    assert wait_for(lambda: _status(tenant_a, first_a)[0] == "sent" and _status(tenant_a, first_a)) == ("sent", "msg-1")
    assert webhook_receiver.received("/a")[0].body == {"to": "+15550000001", "content": "hello from A"}

    # when A is stopped and both tenants queue a message
    assert api_a.post("/api/scheduler/stop").json()["running"] is False
    held_a = api_a.post("/api/outbound-messages", {"to": "+15550000002", "content": "held"}).json()["id"]
    first_b = api_b.post("/api/outbound-messages", {"to": "+15550000003", "content": "b1"}).json()["id"]
    wait_for(lambda: webhook_receiver.keys("/b") == [first_b], timeout=15, message="B's first message")
    # (B keeps running: one more of its runs after A's stop, so A had every chance to send as well)
    second_b = api_b.post("/api/outbound-messages", {"to": "+15550000004", "content": "b2"}).json()["id"]
    wait_for(lambda: webhook_receiver.keys("/b") == [first_b, second_b], timeout=15, message="B's second message")

    # then A sent nothing
    assert webhook_receiver.keys("/a") == [first_a]
    assert _status(tenant_a, held_a) == ("pending", None)

    # when A is started again, its message goes out
    assert api_a.post("/api/scheduler/start").json()["running"] is True
    wait_for(lambda: webhook_receiver.keys("/a") == [first_a, held_a], timeout=15, message="A to resume")
    assert webhook_receiver.keys("/b") == [first_b, second_b]  # nothing sent twice
    assert "tenant-work-dispatch" in celery_beat.log()
    print(f"first delivery {delivered_after:.1f} s after the message was queued (interval 1 s)")
