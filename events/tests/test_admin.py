"""The tenant admin's webhooks: endpoints (secret shown once), deliveries filtered, redelivered, with attempts."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from core.tests.support import PASSWORD, host_of, make_user
from core.models import User
from events.models import Delivery, DeliveryAttempt, WebhookEndpoint
from events.services import event_record, webhook_endpoint_create


@pytest.fixture
def admin_client(tenant_a) -> Client:
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant_a))
    assert client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"}).status_code == 302
    return client


def test_an_endpoint_added_in_the_admin_shows_its_secret_once(tenant_a, admin_client):
    response = admin_client.post(
        "/admin/events/webhookendpoint/add/",
        {"url": "http://127.0.0.1:9/hook", "events": ["message.created", "chat.resolved"], "description": "bridge"},
        follow=True,
    )

    assert response.status_code == 200
    with schema_context(tenant_a.schema_name):
        endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["message.created", "chat.resolved"]
    assert f"Signing secret (shown only now): {endpoint.secret}".encode() in response.content
    change = admin_client.get(f"/admin/events/webhookendpoint/{endpoint.id}/change/")
    assert change.status_code == 200 and endpoint.secret.encode() not in change.content


def test_an_endpoint_to_a_private_address_is_refused_in_the_admin(tenant_a, admin_client, settings):
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE = False
    response = admin_client.post("/admin/events/webhookendpoint/add/", {"url": "http://127.0.0.1/x", "events": ["*"]})
    assert response.status_code == 200 and b"webhooks may only call public hosts" in response.content
    with schema_context(tenant_a.schema_name):
        assert WebhookEndpoint.objects.count() == 0


def test_deliveries_are_filtered_show_their_attempts_and_are_redelivered(tenant_a, admin_client):
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url="http://127.0.0.1:9/hook", events=["*"])
        event_record(type="chat.resolved", data={"n": 1})
        event_record(type="ticket.created", data={"n": 2})
        dead, waiting = Delivery.objects.order_by("event_id")
        Delivery.objects.filter(id=dead.id).update(status="dead", attempts=8, last_status_code=500, last_error="HTTP 500: down")
        DeliveryAttempt.objects.create(delivery=dead, attempted_at=timezone.now(), status_code=500, error="HTTP 500: down", duration_ms=12)

    only_dead = admin_client.get("/admin/events/delivery/?status__exact=dead")
    detail = admin_client.get(f"/admin/events/delivery/{dead.id}/change/")
    redelivered = admin_client.post(
        "/admin/events/delivery/", {"action": "redeliver", ACTION_CHECKBOX_NAME: [str(dead.id)]}, follow=True
    )

    assert only_dead.status_code == detail.status_code == redelivered.status_code == 200
    assert [delivery.id for delivery in only_dead.context_data["cl"].result_list] == [dead.id]
    assert b"HTTP 500: down" in detail.content and b"12" in detail.content
    with schema_context(tenant_a.schema_name):
        dead.refresh_from_db()
        assert (dead.status, dead.attempts) == ("pending", 0)
    assert b"1 deliver(ies) queued again." in redelivered.content
