"""A row written in tenant A's schema is invisible from tenant B, through the ORM and through the API."""

from django.utils import timezone
from django_tenants.utils import schema_context

from core.tests.support import api_client, make_user
from conversations.models import InboundEvent
from conversations.services import inbound_event_record
from core.models import User


def test_rows_of_tenant_a_are_invisible_from_tenant_b(tenant_a, tenant_b, platform_api):
    # given an event and a user in tenant A
    with schema_context(tenant_a.schema_name):
        event = InboundEvent.objects.create(payload={"secret": "a"}, created_at=timezone.now())
    make_user(tenant=tenant_a, role=User.Role.AGENT, email="only-in-a@example.test")

    # then tenant B's schema has neither
    with schema_context(tenant_b.schema_name):
        assert not InboundEvent.objects.filter(id=event.id).exists()
        assert not User.objects.filter(email="only-in-a@example.test").exists()
    # nor does the public schema
    assert not User.objects.filter(email="only-in-a@example.test").exists()
    # and the API lists it for A only
    assert [item["id"] for item in platform_api.get(f"/api/tenants/{tenant_a.id}/messages").json()["data"]] == [str(event.id)]
    assert platform_api.get(f"/api/tenants/{tenant_b.id}/messages").json()["data"] == []


def test_recording_an_event_twice_writes_one_row(tenant_a):
    import uuid

    event_id = uuid.uuid4()
    with schema_context(tenant_a.schema_name):
        inbound_event_record(event_id=event_id, payload={"n": 1}, created_at=timezone.now())
        inbound_event_record(event_id=event_id, payload={"n": 1}, created_at=timezone.now())
        assert InboundEvent.objects.filter(id=event_id).count() == 1


def test_event_payload_must_be_an_object(platform_api, tenant_a):
    response = platform_api.post(f"/api/tenants/{tenant_a.id}/messages", {"payload": [1, 2]})

    assert response.status_code == 400
    assert list(response.json()) == ["payload"]


def test_events_of_an_unknown_tenant_are_404(platform_api):
    assert platform_api.post("/api/tenants/999999/messages", {"payload": {}}).status_code == 404
    assert platform_api.get("/api/tenants/999999/messages").status_code == 404


def test_event_log_needs_a_platform_admin(tenant_a):
    assert api_client().get(f"/api/tenants/{tenant_a.id}/messages").status_code == 401
