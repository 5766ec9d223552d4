"""The tenant's Django admin: outbound messages (filter, search, retry) and the scheduler (start, stop, edit)."""

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
from django_tenants.utils import schema_context

from core.tests.support import host_of, make_user, PASSWORD
from core.models import User
from scheduler.models import OutboundMessage, SchedulerSetting
from scheduler.services import outbound_message_create
from scheduler.tests.factories import make_outbound_messages
from tenants.models import TenantWork


@pytest.fixture
def admin_client(tenant_a) -> Client:
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant_a))
    assert client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"}).status_code == 302
    return client


def test_outbound_messages_are_listed_filtered_and_searched(tenant_a, admin_client):
    with schema_context(tenant_a.schema_name):
        sent, failed = make_outbound_messages(2)
        OutboundMessage.objects.filter(id=sent.id).update(status="sent", message_id="provider-abc")
        OutboundMessage.objects.filter(id=failed.id).update(status="failed", content="the unlucky one")

    index = admin_client.get("/admin/")
    only_failed = admin_client.get("/admin/scheduler/outboundmessage/?status__exact=failed")
    searched = admin_client.get("/admin/scheduler/outboundmessage/?q=provider-abc")

    assert index.status_code == only_failed.status_code == searched.status_code == 200
    assert b"Outbound messages" in index.content and b"Scheduler settings" in index.content
    assert b"the unlucky one" in only_failed.content and b"message 0" not in only_failed.content
    assert b"message 0" in searched.content and b"the unlucky one" not in searched.content


def test_the_retry_action_requeues_failed_messages_only(tenant_a, admin_client):
    with schema_context(tenant_a.schema_name):
        failed, sent = make_outbound_messages(2)
        OutboundMessage.objects.filter(id=failed.id).update(status="failed", attempts=5, last_error="HTTP 500")
        OutboundMessage.objects.filter(id=sent.id).update(status="sent", attempts=1, message_id="m")

    response = admin_client.post(
        "/admin/scheduler/outboundmessage/",
        {"action": "retry_failed", ACTION_CHECKBOX_NAME: [str(failed.id), str(sent.id)]},
        follow=True,
    )

    assert response.status_code == 200
    assert b"1 message(s) queued again." in response.content
    assert b"1 message(s) skipped" in response.content
    with schema_context(tenant_a.schema_name):
        assert sorted(OutboundMessage.objects.values_list("status", "attempts")) == [("pending", 0), ("sent", 1)]


def test_adding_a_message_in_the_admin_validates_like_the_api(tenant_a, admin_client):
    bad = admin_client.post("/admin/scheduler/outboundmessage/add/", {"to": "0812", "content": "x" * 161})
    good = admin_client.post("/admin/scheduler/outboundmessage/add/", {"to": "+15551234567", "content": "from the admin"})

    assert bad.status_code == 200  # the form again, with its errors
    assert good.status_code == 302
    with schema_context(tenant_a.schema_name):
        assert list(OutboundMessage.objects.values_list("to", "content", "status")) == [("+15551234567", "from the admin", "pending")]


def test_start_and_stop_actions_and_editing_the_interval(tenant_a, admin_client):
    changelist = "/admin/scheduler/schedulersetting/"
    with schema_context(tenant_a.schema_name):
        outbound_message_create(to="+15550000001", content="pending")

    def outbound_due_at():
        return TenantWork.objects.filter(tenant=tenant_a, kind="outbound").values_list("due_at", flat=True).first()

    stopped = admin_client.post(changelist, {"action": "stop", ACTION_CHECKBOX_NAME: ["1"]}, follow=True)

    assert b"Scheduler stopped." in stopped.content
    assert outbound_due_at() is None

    admin_client.post(changelist, {"action": "start", ACTION_CHECKBOX_NAME: ["1"]})
    edited = admin_client.post(
        f"{changelist}1/change/",
        {"interval_seconds": 30, "batch_size": 4, "webhook_url": "https://provider.example/send", "auth_key": "k"},
    )

    assert edited.status_code == 302
    with schema_context(tenant_a.schema_name):
        setting = SchedulerSetting.objects.get()
    assert (setting.running, setting.interval_seconds, setting.batch_size, setting.auth_key) == (True, 30, 4, "k")
    assert outbound_due_at() == setting.schedule_anchor_at + timedelta(seconds=30)  # the dispatcher follows


def test_the_admin_refuses_an_auth_key_or_webhook_url_that_is_not_visible_ascii(tenant_a, admin_client):
    change = "/admin/scheduler/schedulersetting/1/change/"
    form = {"interval_seconds": 30, "batch_size": 4, "webhook_url": "https://provider.example/send"}
    with schema_context(tenant_a.schema_name):
        before = SchedulerSetting.objects.get()

    bad_key = admin_client.post(change, {**form, "auth_key": "k\r\nX-Injected: yes"})
    bad_url = admin_client.post(change, {**form, "webhook_url": "https://b\u00fccher.example/send"})

    assert (bad_key.status_code, bad_url.status_code) == (200, 200)  # the form again, with its errors
    assert b"Use visible ASCII characters only" in bad_key.content
    assert b"Use visible ASCII characters only" in bad_url.content
    with schema_context(tenant_a.schema_name):
        after = SchedulerSetting.objects.get()
    assert (after.auth_key, after.webhook_url, after.interval_seconds) == (before.auth_key, before.webhook_url, before.interval_seconds)
