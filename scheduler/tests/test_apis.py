"""The scheduler API on a tenant's host: admins only, this tenant only, bad input writes nothing."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_tenants.utils import schema_context

from core.tests.fixtures.webhooks import Reply

from core.tests.support import api_client, make_user, token_for
from core.models import User
from scheduler.models import OutboundMessage, SchedulerSetting
from scheduler.services import outbound_message_create, outbound_send_due, scheduler_update
from scheduler.tests.factories import make_outbound_messages
from tenants.models import TenantWork

STATE_FIELDS = {"running", "interval_seconds", "batch_size", "webhook_url", "last_run_at", "next_run_at"}
MESSAGE_FIELDS = {"id", "to", "content", "status", "attempts", "message_id", "sent_at", "last_error", "next_attempt_at", "created_at"}


def _outbound_due_at(tenant):
    """When the dispatcher sends the tenant's next run (its `outbound` mark in the due-work index), or None."""
    return TenantWork.objects.filter(tenant=tenant, kind=TenantWork.Kind.OUTBOUND).values_list("due_at", flat=True).first()


def _assert_next_run_time(next_run_at, *, anchor, interval: int, before, after) -> None:
    """`next_run_at` is the job's first run time (anchor + a whole number of intervals) at or after the
    moment the request was answered, which lies between `before` and `after`. (The session's tenants were
    made minutes before some tests run: their first run times may have passed with nothing to send.)"""
    intervals = (next_run_at - anchor) / timedelta(seconds=interval)
    assert intervals == int(intervals) >= 1, intervals
    assert before <= next_run_at and next_run_at - timedelta(seconds=interval) < after


def _queue_one(tenant) -> None:
    with schema_context(tenant.schema_name):
        outbound_message_create(to="+15550000001", content="hello")


def _setting(tenant) -> SchedulerSetting:
    with schema_context(tenant.schema_name):
        return SchedulerSetting.objects.get()


def _count(tenant) -> int:
    with schema_context(tenant.schema_name):
        return OutboundMessage.objects.count()


# --- the scheduler's state -----------------------------------------------------------------------------


def test_a_new_tenant_has_a_running_scheduler_with_the_defaults(tenant_a, tenant_a_admin_api):
    before = timezone.now()
    response = tenant_a_admin_api.get("/api/scheduler")
    after = timezone.now()

    assert response.status_code == 200
    body = response.json()
    started_at = _setting(tenant_a).schedule_anchor_at
    assert body == {
        "running": True,
        "interval_seconds": 120,
        "batch_size": 2,
        "webhook_url": "",
        "last_run_at": None,
        "next_run_at": body["next_run_at"],
    }
    _assert_next_run_time(parse_datetime(body["next_run_at"]), anchor=started_at, interval=120, before=before, after=after)
    # a running job with nothing to send costs nothing: no beat entry, no mark for the dispatcher
    assert not PeriodicTask.objects.filter(name__contains=tenant_a.schema_name).exists()
    assert _outbound_due_at(tenant_a) is None


def test_a_queued_message_is_due_at_the_next_run_time(tenant_a, tenant_a_admin_api):
    before = timezone.now()
    _queue_one(tenant_a)
    body = tenant_a_admin_api.get("/api/scheduler").json()
    after = timezone.now()

    next_run_at = parse_datetime(body["next_run_at"])
    assert _outbound_due_at(tenant_a) == next_run_at
    _assert_next_run_time(next_run_at, anchor=_setting(tenant_a).schedule_anchor_at, interval=120, before=before, after=after)


def test_stop_and_start_are_idempotent_and_drive_the_tenants_mark(tenant_a, tenant_a_admin_api):
    _queue_one(tenant_a)

    stopped = tenant_a_admin_api.post("/api/scheduler/stop")
    stopped_again = tenant_a_admin_api.post("/api/scheduler/stop")

    assert stopped.status_code == stopped_again.status_code == 200
    assert stopped.json() == stopped_again.json()
    assert (stopped.json()["running"], stopped.json()["next_run_at"]) == (False, None)
    assert _outbound_due_at(tenant_a) is None  # the dispatcher sends it no run
    assert _setting(tenant_a).running is False

    started = tenant_a_admin_api.post("/api/scheduler/start")
    started_again = tenant_a_admin_api.post("/api/scheduler/start")

    assert started.status_code == started_again.status_code == 200
    assert started.json() == started_again.json()
    setting = _setting(tenant_a)
    assert started.json()["running"] is True
    assert parse_datetime(started.json()["next_run_at"]) == setting.schedule_anchor_at + timedelta(seconds=120)
    # the countdown starts again from the start: the pending message goes one interval after it
    assert _outbound_due_at(tenant_a) == setting.schedule_anchor_at + timedelta(seconds=120)


def test_start_stop_and_patch_write_no_beat_rows(tenant_a, tenant_a_admin_api):
    # The job lives in the tenant's setting and the due-work index: beat's tables are not touched per tenant.
    _queue_one(tenant_a)
    beat_rows = (PeriodicTask.objects.count(), IntervalSchedule.objects.count())

    stopped = tenant_a_admin_api.post("/api/scheduler/stop")
    started = tenant_a_admin_api.post("/api/scheduler/start")
    patched = tenant_a_admin_api.patch("/api/scheduler", {"interval_seconds": 45})

    assert [stopped.status_code, started.status_code, patched.status_code] == [200, 200, 200]
    assert patched.json()["interval_seconds"] == 45
    assert (PeriodicTask.objects.count(), IntervalSchedule.objects.count()) == beat_rows


def test_patch_validates_only_what_it_changes(tenant_a, tenant_a_admin_api):
    # given a stored webhook_url the URL validator refuses (a host without a dot, as OUTBOUND_WEBHOOK_URL may name
    # a service of the operator's network)
    with schema_context(tenant_a.schema_name):
        SchedulerSetting.objects.update(webhook_url="http://webhook-mock:9000/send")

    batch = tenant_a_admin_api.patch("/api/scheduler", {"batch_size": 3})
    url = tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": "http://another-mock:9000/send"})

    assert (batch.status_code, batch.json()["batch_size"], batch.json()["webhook_url"]) == (
        200, 3, "http://webhook-mock:9000/send"
    )  # fmt: skip
    assert (url.status_code, list(url.json())) == (400, ["webhook_url"])
    assert _setting(tenant_a).webhook_url == "http://webhook-mock:9000/send"


def test_stopping_one_tenant_leaves_the_other_running(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    _queue_one(tenant_a)
    _queue_one(tenant_b)
    b_due_at = _outbound_due_at(tenant_b)

    tenant_a_admin_api.post("/api/scheduler/stop")

    assert tenant_b_admin_api.get("/api/scheduler").json()["running"] is True
    assert (_outbound_due_at(tenant_a), _outbound_due_at(tenant_b)) == (None, b_due_at)
    assert b_due_at is not None


def test_patch_changes_the_settings_and_the_run_time(tenant_a, tenant_a_admin_api):
    original_anchor = _setting(tenant_a).schedule_anchor_at
    _queue_one(tenant_a)

    response = tenant_a_admin_api.patch(
        "/api/scheduler",
        {"interval_seconds": 5, "batch_size": 7, "webhook_url": "https://provider.example/send", "auth_key": "k-1"},
    )

    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("running", "interval_seconds", "batch_size", "webhook_url")} == {
        "running": True, "interval_seconds": 5, "batch_size": 7, "webhook_url": "https://provider.example/send"
    }  # fmt: skip
    assert set(body) == STATE_FIELDS  # the auth key is never shown
    setting = _setting(tenant_a)
    assert (setting.interval_seconds, setting.batch_size, setting.auth_key) == (5, 7, "k-1")
    # a new interval restarts the countdown: the next run is one new interval after the change
    assert parse_datetime(body["next_run_at"]) == setting.schedule_anchor_at + timedelta(seconds=5)
    assert _outbound_due_at(tenant_a) == setting.schedule_anchor_at + timedelta(seconds=5)
    assert setting.schedule_anchor_at > original_anchor


HEADER_UNSAFE = ["k\r\nX-Injected: yes", "k\nX", "key with spaces", "cl\u00e9", "k\u2028", "k\x7f", "k\t"]


@pytest.mark.parametrize("value", HEADER_UNSAFE)
def test_an_auth_key_or_webhook_url_that_is_not_visible_ascii_is_a_400_and_changes_nothing(
    tenant_a, tenant_a_admin_api, value
):
    # given a working setting
    tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": "https://provider.example/send", "auth_key": "k"})
    before = _setting(tenant_a)

    # when a value that could not go into a header or a request line as it is comes in
    bad_key = tenant_a_admin_api.patch("/api/scheduler", {"auth_key": value, "batch_size": 9})
    bad_url = tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": f"https://provider.example/{value}/send"})
    bad_host = tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": "https://b\u00fccher.example/send"})

    # then each is a 400 naming the field, and nothing changed
    assert (bad_key.status_code, list(bad_key.json())) == (400, ["auth_key"])
    assert (bad_url.status_code, list(bad_url.json())) == (400, ["webhook_url"])
    assert (bad_host.status_code, list(bad_host.json())) == (400, ["webhook_url"])
    setting = _setting(tenant_a)
    assert (setting.auth_key, setting.webhook_url, setting.batch_size) == ("k", "https://provider.example/send", before.batch_size)


def test_the_service_refuses_what_the_api_refuses(tenant_a):
    # the rule holds for every caller of the service (the admin, a shell), not only the API's serializer
    from django.core.exceptions import ValidationError

    with schema_context(tenant_a.schema_name):
        with pytest.raises(ValidationError) as error:
            scheduler_update(auth_key="k\r\nX-Injected: yes", webhook_url="https://b\u00fccher.example/")
        assert sorted(error.value.message_dict) == ["auth_key", "webhook_url"]


def test_patch_of_one_field_leaves_the_others(tenant_a, tenant_a_admin_api):
    tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": "http://127.0.0.1:9/x", "auth_key": "k"})

    response = tenant_a_admin_api.patch("/api/scheduler", {"batch_size": 3})

    assert response.status_code == 200
    setting = _setting(tenant_a)
    assert (setting.interval_seconds, setting.batch_size, setting.webhook_url, setting.auth_key) == (120, 3, "http://127.0.0.1:9/x", "k")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": "soon"}, "interval_seconds"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 21}, "batch_size"),
        ({"webhook_url": "ftp://provider.example/send"}, "webhook_url"),
        ({"webhook_url": "not a url"}, "webhook_url"),
        ({"interval_seconds": 10, "batch_size": 0}, "batch_size"),  # one bad field: nothing is applied
    ],
)
def test_patch_with_bad_input_is_400_and_changes_nothing(tenant_a, tenant_a_admin_api, body, field):
    _queue_one(tenant_a)
    due_at = _outbound_due_at(tenant_a)

    response = tenant_a_admin_api.patch("/api/scheduler", body)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    setting = _setting(tenant_a)
    assert (setting.interval_seconds, setting.batch_size, setting.webhook_url) == (120, 2, "")
    assert _outbound_due_at(tenant_a) == due_at


def test_last_run_at_and_next_run_at_follow_the_runs(tenant_a, tenant_a_admin_api):
    with schema_context(tenant_a.schema_name):
        summary = outbound_send_due()

    body = tenant_a_admin_api.get("/api/scheduler").json()

    assert summary.skipped == "no webhook_url"
    last_run_at = _setting(tenant_a).last_run_at
    assert parse_datetime(body["last_run_at"]) == last_run_at
    assert parse_datetime(body["next_run_at"]) == last_run_at + timedelta(seconds=120)


# --- outbound messages ---------------------------------------------------------------------------------


def test_create_an_outbound_message(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.post("/api/outbound-messages", {"to": "+6281234567890", "content": "Your order shipped"})

    assert response.status_code == 201
    body = response.json()
    with schema_context(tenant_a.schema_name):
        message = OutboundMessage.objects.get()
    assert body == {
        "id": str(message.id),
        "to": "+6281234567890",
        "content": "Your order shipped",
        "status": "pending",
        "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert (message.attempts, message.message_id, message.sent_at, message.last_error) == (0, None, None, None)


def test_content_of_exactly_the_limit_is_accepted(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.post("/api/outbound-messages", {"to": "+15551234567", "content": "x" * 160})

    assert response.status_code == 201
    assert _count(tenant_a) == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"to": "+6281234567890", "content": "x" * 161}, "content"),
        ({"to": "+6281234567890", "content": "é" * 161}, "content"),
        ({"to": "+6281234567890", "content": ""}, "content"),
        ({"to": "+6281234567890", "content": "   "}, "content"),
        ({"to": "+6281234567890"}, "content"),
        ({"to": "081234567890", "content": "hi"}, "to"),
        ({"to": "+0812345678", "content": "hi"}, "to"),
        ({"to": "+1234567890123456", "content": "hi"}, "to"),
        ({"to": "+62 812 3456 7890", "content": "hi"}, "to"),
        ({"to": "+62\u0668\u0661\u0662\u0663\u0664", "content": "hi"}, "to"),  # Arabic-Indic digits
        ({"to": "+62\uff18\uff11\uff12\uff13", "content": "hi"}, "to"),  # full-width digits
        ({"content": "hi"}, "to"),
    ],
)
def test_bad_message_is_400_and_nothing_is_stored(tenant_a, tenant_a_admin_api, body, field):
    response = tenant_a_admin_api.post("/api/outbound-messages", body)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert _count(tenant_a) == 0


def test_the_content_limit_is_a_setting(tenant_a, tenant_a_admin_api, settings):
    settings.OUTBOUND_CONTENT_MAX_LENGTH = 5

    too_long = tenant_a_admin_api.post("/api/outbound-messages", {"to": "+15551234567", "content": "123456"})
    fits = tenant_a_admin_api.post("/api/outbound-messages", {"to": "+15551234567", "content": "12345"})

    assert (too_long.status_code, fits.status_code) == (400, 201)
    assert too_long.json() == {"content": ["Ensure this field has no more than 5 characters."]}


def test_list_is_paginated_oldest_first_and_filtered_by_status(tenant_a, tenant_a_admin_api):
    with schema_context(tenant_a.schema_name):
        messages = make_outbound_messages(3)
        OutboundMessage.objects.filter(id=messages[1].id).update(status="sent", message_id="m-1", attempts=1)

    first_page = tenant_a_admin_api.get("/api/outbound-messages?limit=2").json()
    second_page = tenant_a_admin_api.get(f"/api/outbound-messages?limit=2&cursor={first_page['next_cursor']}").json()
    sent = tenant_a_admin_api.get("/api/outbound-messages?status=sent").json()
    pending = tenant_a_admin_api.get("/api/outbound-messages?status=pending").json()

    assert [item["id"] for item in first_page["data"] + second_page["data"]] == [str(m.id) for m in messages]
    assert second_page["next_cursor"] is None
    assert set(first_page["data"][0]) == MESSAGE_FIELDS
    assert [(item["id"], item["status"], item["message_id"], item["attempts"]) for item in sent["data"]] == [
        (str(messages[1].id), "sent", "m-1", 1)
    ]
    assert [item["id"] for item in pending["data"]] == [str(messages[0].id), str(messages[2].id)]
    assert sent["next_cursor"] is None


def test_list_with_an_unknown_status_is_400(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.get("/api/outbound-messages?status=lost")

    assert response.status_code == 400
    assert list(response.json()) == ["status"]


def test_a_failed_message_can_be_retried(tenant_a, tenant_a_admin_api, webhook_receiver):
    with schema_context(tenant_a.schema_name):
        [message] = make_outbound_messages(1, status="failed", attempts=5, last_error="HTTP 400: no")

    response = tenant_a_admin_api.post(f"/api/outbound-messages/{message.id}/retry")

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["attempts"], body["last_error"]) == (str(message.id), "pending", 0, "HTTP 400: no")

    # and the next run sends it
    tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": webhook_receiver.url})
    with schema_context(tenant_a.schema_name):
        outbound_send_due()
        message.refresh_from_db()
    assert (message.status, message.message_id, message.last_error) == ("sent", "msg-1", None)


@pytest.mark.parametrize("status", ["pending", "sending", "sent"])
def test_only_failed_messages_can_be_retried(tenant_a, tenant_a_admin_api, status):
    extra = {"claim_token": uuid.uuid4(), "lease_expires_at": parse_datetime("2030-01-01T00:00:00Z")} if status == "sending" else {}
    with schema_context(tenant_a.schema_name):
        [message] = make_outbound_messages(1, status=status, **extra)

    response = tenant_a_admin_api.post(f"/api/outbound-messages/{message.id}/retry")

    assert response.status_code == 409
    assert response.json() == {"detail": f'Only failed messages can be retried; this one is "{status}".'}
    with schema_context(tenant_a.schema_name):
        assert OutboundMessage.objects.get().status == status


def test_retry_of_an_unknown_message_is_404(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.post(f"/api/outbound-messages/{uuid.uuid4()}/retry")

    assert response.status_code == 404


def test_a_message_can_be_read_by_id(tenant_a, tenant_a_admin_api, webhook_receiver):
    webhook_receiver.script(Reply(status=202, body={"messageId": "provider-77"}))
    tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": webhook_receiver.url})
    created = tenant_a_admin_api.post("/api/outbound-messages", {"to": "+15551234567", "content": "hi"}).json()
    with schema_context(tenant_a.schema_name):
        outbound_send_due()

    body = tenant_a_admin_api.get(f"/api/outbound-messages/{created['id']}").json()

    assert (body["status"], body["message_id"], body["attempts"], body["last_error"]) == ("sent", "provider-77", 1, None)
    assert body["sent_at"] is not None


# --- who may use it ------------------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/api/scheduler"),
    ("patch", "/api/scheduler"),
    ("post", "/api/scheduler/start"),
    ("post", "/api/scheduler/stop"),
    ("get", "/api/outbound-messages"),
    ("post", "/api/outbound-messages"),
    ("post", f"/api/outbound-messages/{uuid.uuid4()}/retry"),
]


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_agents_are_refused(tenant_a, method, path):
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    client = api_client(tenant=tenant_a, token=token_for(agent, tenant=tenant_a))

    response = getattr(client, method)(path, {"to": "+15551234567", "content": "hi"} if method == "post" else None)

    assert response.status_code == 403
    assert _count(tenant_a) == 0
    assert _setting(tenant_a).running is True


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_another_tenants_admin_token_is_refused(tenant_a, tenant_b, tenant_b_admin_api, method, path):
    client = api_client(tenant=tenant_a, token=tenant_b_admin_api._credentials["HTTP_AUTHORIZATION"].split()[1])

    response = getattr(client, method)(path, {"to": "+15551234567", "content": "hi"} if method == "post" else None)

    assert response.status_code == 401
    assert _count(tenant_a) == 0
    assert _setting(tenant_a).running is True


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_anonymous_requests_are_refused(tenant_a, method, path):
    response = getattr(api_client(tenant=tenant_a), method)(path)

    assert response.status_code == 401


def test_the_platform_host_has_no_scheduler(platform_api):
    assert platform_api.get("/api/scheduler").status_code == 404


def test_a_tenant_sees_only_its_own_messages(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    a_ids = [tenant_a_admin_api.post("/api/outbound-messages", {"to": "+15551230000", "content": f"a{n}"}).json()["id"] for n in range(2)]
    b_id = tenant_b_admin_api.post("/api/outbound-messages", {"to": "+15551239999", "content": "b"}).json()["id"]

    a_list = tenant_a_admin_api.get("/api/outbound-messages").json()
    b_list = tenant_b_admin_api.get("/api/outbound-messages").json()

    assert [item["id"] for item in a_list["data"]] == a_ids
    assert [item["id"] for item in b_list["data"]] == [b_id]
    assert tenant_b_admin_api.get(f"/api/outbound-messages/{a_ids[0]}").status_code == 404
    assert tenant_b_admin_api.post(f"/api/outbound-messages/{a_ids[0]}/retry").status_code == 404
    with schema_context(tenant_b.schema_name):
        assert list(OutboundMessage.objects.values_list("content", flat=True)) == ["b"]
