"""The tenant event log's dead-letter state: a payload that keeps failing is parked, never lost."""

import json
import uuid

import pytest
from django.db import DataError
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from core.tests.support import host_of, make_user, PASSWORD, wait_for
from conversations.models import InboundEvent
from conversations.services import inbound_event_attempt_failed, inbound_event_record
from core.models import User
from tenants.services import tenant_event_schedule
from tenants.tests.support import live_platform_api


@pytest.mark.worker
def test_a_payload_the_database_refuses_is_parked_dead_after_bounded_retries(celery_worker, make_live_tenant):
    # given a tenant, and a payload PostgreSQL's jsonb refuses on every attempt (a NUL character). The API
    # refuses it (core/tests/test_input.py); one published by another path (a producer of ours, a message
    # queued before that rule) must still be parked, not lost.
    tenant = make_live_tenant("dead")
    platform = live_platform_api()
    poison = {"text": "before\u0000after", "n": 1}

    # when it is published, followed by a good one
    poison_id = str(tenant_event_schedule(tenant=tenant, payload=poison))
    good_id = platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": 2}}).json()["id"]

    # then the good one is processed, and the poison is parked dead after 3 attempts (test settings) with
    # its payload kept as text and the database's error
    def statuses():
        with schema_context(tenant.schema_name):
            return dict(InboundEvent.objects.values_list("id", "status"))

    wait_for(lambda: statuses().get(uuid.UUID(poison_id)) == "dead", timeout=20, message="the poison to be parked")
    with schema_context(tenant.schema_name):
        dead = InboundEvent.objects.get(id=poison_id)
        good = InboundEvent.objects.get(id=good_id)
    assert (dead.status, dead.attempts, dead.payload) == ("dead", 3, None)
    assert json.loads(dead.raw_payload) == poison
    # the database's error, its first line only: never the SQL or the data it quotes after
    assert dead.last_error == "DataError: unsupported Unicode escape sequence"
    assert (good.status, good.attempts, good.payload, good.last_error) == ("processed", 1, {"n": 2}, "")
    listed = platform.get(f"/api/tenants/{tenant.id}/messages").json()["data"]
    assert [(item["id"], item["status"], item["attempts"]) for item in listed] == [
        (poison_id, "dead", 3),
        (good_id, "processed", 1),
    ]

    # and the tenant's admin shows it among the dead events
    admin = make_user(tenant=tenant, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant))
    signed_in = client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"})
    assert signed_in.status_code == 302
    page = client.get("/admin/conversations/inboundevent/?status__exact=dead")
    assert page.status_code == 200
    assert poison_id.encode() in page.content
    assert good_id.encode() not in page.content
    detail = client.get(f"/admin/conversations/inboundevent/{poison_id}/change/")
    assert detail.status_code == 200
    assert b"unsupported Unicode escape sequence" in detail.content


def test_a_failed_attempt_never_overwrites_a_processed_event(tenant_a):
    event_id, now = uuid.uuid4(), timezone.now()
    with schema_context(tenant_a.schema_name):
        inbound_event_record(event_id=event_id, payload={"n": 1}, created_at=now)

        inbound_event_attempt_failed(
            event_id=event_id, payload={"n": 1}, created_at=now, attempt=2, error=RuntimeError("late"), is_final=True
        )

        event = InboundEvent.objects.get(id=event_id)
        assert (event.status, event.attempts, event.payload, event.last_error) == ("processed", 1, {"n": 1}, "")


def test_an_attempt_that_works_after_failures_marks_the_event_processed(tenant_a):
    event_id, now = uuid.uuid4(), timezone.now()
    with schema_context(tenant_a.schema_name):
        inbound_event_attempt_failed(
            event_id=event_id, payload={"n": 1}, created_at=now, attempt=1, error=RuntimeError("db away"),
            is_final=False,
        )
        retrying = InboundEvent.objects.get(id=event_id)
        assert (retrying.status, retrying.attempts, retrying.payload) == ("accepted", 1, {"n": 1})
        assert retrying.last_error == "RuntimeError: db away"

        inbound_event_record(event_id=event_id, payload={"n": 1}, created_at=now, attempt=2)

        event = InboundEvent.objects.get(id=event_id)
        assert (event.status, event.attempts, event.payload, event.raw_payload, event.last_error) == (
            "processed", 2, {"n": 1}, "", "",
        )  # fmt: skip
        assert InboundEvent.objects.count() == 1


def test_recording_a_payload_the_database_refuses_writes_nothing(tenant_a):
    event_id = uuid.uuid4()
    with schema_context(tenant_a.schema_name):
        with pytest.raises(DataError):
            inbound_event_record(event_id=event_id, payload={"text": "\u0000"}, created_at=timezone.now())
        assert not InboundEvent.objects.filter(id=event_id).exists()
