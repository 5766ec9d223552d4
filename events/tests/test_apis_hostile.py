"""A hostile client on the webhook endpoints API: the same request twice at once, a delete under a delivery in
flight, forged ids, text no column can hold, huge bodies. Committed data (live tenants) and one thread per
client for the concurrency cases: each request has its own database connection, as in production."""

import json
import threading
import uuid

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from core.models import User
from core.tests.support import api_client, token_for
from events.delivery import webhook_deliveries_send
from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from events.services import event_record, webhook_endpoint_create


def _admin_api(tenant):
    with schema_context(tenant.schema_name):
        admin = User.objects.get(role=User.Role.ADMIN)
    return api_client(tenant=tenant, token=token_for(admin, tenant=tenant))


def _at_once(tenant, requests: list) -> list:
    """Runs each request (a function of a client) on its own thread and connection, released together."""
    barrier = threading.Barrier(len(requests))
    responses: list = [None] * len(requests)

    def run(index: int) -> None:
        client = _admin_api(tenant)
        try:
            barrier.wait(10)
            responses[index] = requests[index](client)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return responses


def test_two_rotations_at_once_rotate_once_and_the_secret_before_both_keeps_signing(make_live_tenant):
    tenant = make_live_tenant("evtrot")
    with schema_context(tenant.schema_name):
        endpoint = webhook_endpoint_create(url="http://127.0.0.1:9/hook", events=["*"])
    deployed = endpoint.secret
    url = f"/api/webhook-endpoints/{endpoint.id}/rotate-secret"

    responses = _at_once(tenant, [lambda client: client.post(url)] * 2)

    # exactly one rotated; the other is a 409 JSON error
    assert sorted(response.status_code for response in responses) == [200, 409]
    [winner] = [response.json()["secret"] for response in responses if response.status_code == 200]
    [loser] = [response.json() for response in responses if response.status_code == 409]
    assert "rotated less than a minute ago" in loser["detail"]
    with schema_context(tenant.schema_name):
        endpoint.refresh_from_db()
    # the winner's secret signs, and the secret receivers had before both requests is the one signing beside it
    assert (endpoint.secret, endpoint.previous_secret) == (winner, deployed)


def test_two_redeliveries_at_once_send_it_once_more_with_the_same_webhook_id(make_live_tenant, event_receiver, no_worker):
    tenant = make_live_tenant("evtredo")
    with schema_context(tenant.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})
        webhook_deliveries_send()
        delivery = Delivery.objects.get()
        assert delivery.status == "succeeded"
    url = f"/api/webhook-deliveries/{delivery.id}/redeliver"

    responses = _at_once(tenant, [lambda client: client.post(url)] * 2)

    assert [response.status_code for response in responses] == [202, 202]
    with schema_context(tenant.schema_name):
        webhook_deliveries_send()
        webhook_deliveries_send()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("succeeded", 1)
        assert DeliveryAttempt.objects.filter(delivery=delivery).count() == 2
    received = event_receiver.received()
    with schema_context(tenant.schema_name):
        webhook_id = delivery.event.webhook_id
    assert [request.headers["webhook-id"] for request in received] == [webhook_id] * 2
    assert received[0].body == received[1].body


def test_a_redelivery_while_the_delivery_is_in_flight_does_not_send_it_twice(make_live_tenant, event_receiver, no_worker, settings):
    settings.EVENTS_HTTP_TIMEOUT_SECONDS = 30
    tenant = make_live_tenant("evtfly")
    event_receiver.script(None)  # the first request hangs until released
    with schema_context(tenant.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})
        delivery = Delivery.objects.get()
    run = threading.Thread(target=lambda: (_in_schema(tenant, webhook_deliveries_send), connection.close()))
    run.start()
    try:
        assert event_receiver.arrived.wait(30)
        # when the admin asks for it again while it is being sent
        response = _admin_api(tenant).post(f"/api/webhook-deliveries/{delivery.id}/redeliver")
        assert response.status_code == 202 and response.json()["status"] == "pending"
    finally:
        event_receiver.released.set()
        run.join(60)
    # then the answer lost by the hung request makes it a retry; nothing else was queued
    with schema_context(tenant.schema_name):
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert len(event_receiver.received()) == 1


def _in_schema(tenant, function):
    with schema_context(tenant.schema_name):
        return function()


def test_deleting_an_endpoint_while_its_delivery_is_in_flight(make_live_tenant, event_receiver, no_worker, settings):
    settings.EVENTS_HTTP_TIMEOUT_SECONDS = 30
    tenant = make_live_tenant("evtdel")
    event_receiver.script(None)
    with schema_context(tenant.schema_name):
        endpoint = webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})
        event_record(type="chat.sla_breached", data={"n": 2})
    outcome = {}
    settings.EVENTS_ENDPOINT_CONCURRENCY = 1  # the second waits in the run while the first hangs

    def send() -> None:
        try:
            outcome["summary"] = _in_schema(tenant, webhook_deliveries_send)
        except BaseException as error:
            outcome["error"] = error
        finally:
            connection.close()

    run = threading.Thread(target=send)
    run.start()
    try:
        assert event_receiver.arrived.wait(30)
        # when the endpoint is deleted mid-send
        response = _admin_api(tenant).delete(f"/api/webhook-endpoints/{endpoint.id}")
        assert response.status_code == 204
    finally:
        event_receiver.released.set()
        run.join(60)

    # then the run ended cleanly, recorded nothing for it, and sent nothing more to it
    assert "error" not in outcome
    assert (outcome["summary"].succeeded, outcome["summary"].retrying, outcome["summary"].dead) == (0, 0, 0)
    assert len(event_receiver.received()) in (1, 2)  # the hung one; the waiting one may have started meanwhile
    with schema_context(tenant.schema_name):
        assert (WebhookEndpoint.objects.count(), Delivery.objects.count(), DeliveryAttempt.objects.count()) == (0, 0, 0)
        assert Event.objects.count() == 2  # the events stay: the outbox is not the endpoint's


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/webhook-endpoints/not-a-uuid", 404),
        ("/api/webhook-endpoints/not-a-uuid/deliveries", 404),
        ("/api/webhook-endpoints/12345678-1234-1234-1234-1234567890ab/deliveries", 404),
        ("/api/webhook-endpoints/12345678-1234-1234-1234-1234567890ab/rotate-secret", 404),
        ("/api/webhook-endpoints/%00/rotate-secret", 400),  # a NUL in the path is refused before routing
    ],
)
def test_forged_ids_are_a_4xx_json(tenant_a, tenant_a_admin_api, path, status):
    response = tenant_a_admin_api.get(path) if "rotate" not in path else tenant_a_admin_api.post(path)
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json") and "detail" in response.json()


def test_another_tenants_ids_are_a_404_json_on_every_operation(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    with schema_context(tenant_a.schema_name):
        endpoint = webhook_endpoint_create(url="http://127.0.0.1:9/hook", events=["*"])
        event_record(type="chat.sla_breached", data={})
        delivery = Delivery.objects.get()
    for method, path in [
        ("post", f"/api/webhook-deliveries/{delivery.id}/redeliver"),
        ("post", "/api/webhook-deliveries/not-a-uuid/redeliver"),
        ("delete", f"/api/webhook-endpoints/{endpoint.id}"),
        ("post", f"/api/webhook-endpoints/{endpoint.id}/rotate-secret"),
    ]:
        response = getattr(tenant_b_admin_api, method)(path)
        assert response.status_code == 404, path
        assert "detail" in response.json(), path
    with schema_context(tenant_a.schema_name):
        endpoint.refresh_from_db()
        assert endpoint.previous_secret is None and Delivery.objects.get().status == "pending"


@pytest.mark.parametrize(
    "raw, field",
    [
        ('{"url": "http://x.example/h", "events": ["*"], "description": "a\\u0000b"}', None),
        ('{"url": "http://x.example/h", "events": ["*"], "description": "\\udfff"}', None),
        ('{"url": "http://x.example/h", "events": ["*\\u0000"]}', None),
        (json.dumps({"url": "http://x.example/" + "a" * 200_000, "events": ["*"]}), "url"),
        (json.dumps({"url": "http://x.example/h", "events": ["*"], "description": "d" * 500_000}), "description"),
    ],
)
def test_text_no_column_can_hold_and_huge_fields_are_a_400_that_writes_nothing(tenant_a, tenant_a_admin_api, raw, field):
    for method, path in (("POST", "/api/webhook-endpoints"), ("PATCH", None)):
        if path is None:
            with schema_context(tenant_a.schema_name):
                endpoint = webhook_endpoint_create(url="http://127.0.0.1:9/hook", events=["*"])
            path = f"/api/webhook-endpoints/{endpoint.id}"
        response = tenant_a_admin_api.generic(method, path, raw.encode(), content_type="application/json")
        assert response.status_code == 400, (method, raw[:60])
        body = response.json()
        assert field in body if field else ("detail" in body or body), body
    with schema_context(tenant_a.schema_name):
        assert [(e.url, e.description) for e in WebhookEndpoint.objects.all()] == [("http://127.0.0.1:9/hook", "")]


def test_a_body_past_the_upload_limit_is_a_413_json(tenant_a, tenant_a_admin_api):
    raw = json.dumps({"url": "http://x.example/h", "events": ["*"], "description": "d" * 2_000_000}).encode()
    response = tenant_a_admin_api.generic("POST", "/api/webhook-endpoints", raw, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."}
    with schema_context(tenant_a.schema_name):
        assert WebhookEndpoint.objects.count() == 0
