"""The webhook endpoints API on a tenant's host: admins only, this tenant only, bad input a 4xx that writes nothing."""

import json
import uuid

import pytest
from django_tenants.utils import schema_context

from core.tests.support import api_client, make_user, token_for
from core.models import User
from events.models import Delivery, WebhookEndpoint
from events.services import event_record
from tenants.models import TenantWork

ENDPOINT_FIELDS = {"id", "url", "events", "application", "description", "include_private", "is_active", "created_at"}
DELIVERY_FIELDS = {
    "id", "event_id", "event_type", "status", "attempts", "last_status_code", "last_error", "next_attempt_at",
    "created_at", "delivered_at",
}  # fmt: skip


def _create(api, **body):
    return api.post("/api/webhook-endpoints", {"url": "http://127.0.0.1:9/hook", "events": ["*"], **body}, format="json")


def _count(tenant) -> int:
    with schema_context(tenant.schema_name):
        return WebhookEndpoint.objects.count()


def test_create_shows_the_secret_once(tenant_a, tenant_a_admin_api, application_a):
    response = _create(tenant_a_admin_api, events=["message.created", "chat.resolved"], application=application_a.token,
                       description="WhatsApp bridge", include_private=True)  # fmt: skip

    assert response.status_code == 201
    body = response.json()
    assert set(body) == ENDPOINT_FIELDS | {"secret"}
    assert body["secret"].startswith("whsec_") and len(body["secret"]) == 6 + 32
    assert (body["events"], body["application"], body["description"], body["include_private"], body["is_active"]) == (
        ["message.created", "chat.resolved"], application_a.token, "WhatsApp bridge", True, True
    )
    detail = tenant_a_admin_api.get(f"/api/webhook-endpoints/{body['id']}").json()
    assert set(detail) == ENDPOINT_FIELDS and "secret" not in detail
    listed = tenant_a_admin_api.get("/api/webhook-endpoints").json()
    assert [item["id"] for item in listed["data"]] == [body["id"]] and "secret" not in listed["data"][0]


def test_star_stands_for_every_type_and_repeats_count_once(tenant_a, tenant_a_admin_api):
    assert _create(tenant_a_admin_api, events=["chat.created", "*"]).json()["events"] == ["*"]
    assert _create(tenant_a_admin_api, events=["chat.created", "chat.created"]).json()["events"] == ["chat.created"]


def test_patch_delete_and_rotate(tenant_a, tenant_a_admin_api):
    endpoint_id = _create(tenant_a_admin_api).json()["id"]

    patched = tenant_a_admin_api.patch(f"/api/webhook-endpoints/{endpoint_id}", {"events": ["ticket.created"], "is_active": False}, format="json")
    assert patched.status_code == 200
    assert (patched.json()["events"], patched.json()["is_active"]) == (["ticket.created"], False)

    rotated = tenant_a_admin_api.post(f"/api/webhook-endpoints/{endpoint_id}/rotate-secret")
    assert rotated.status_code == 200 and set(rotated.json()) == {"secret"}
    with schema_context(tenant_a.schema_name):
        endpoint = WebhookEndpoint.objects.get()
        assert endpoint.secret == rotated.json()["secret"] and endpoint.previous_secret is not None

    assert tenant_a_admin_api.delete(f"/api/webhook-endpoints/{endpoint_id}").status_code == 204
    assert _count(tenant_a) == 0
    assert tenant_a_admin_api.get(f"/api/webhook-endpoints/{endpoint_id}").status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": 42}, "url"),
        ({"events": []}, "events"),
        ({"events": "*"}, "events"),
        ({"events": ["chat.exploded"]}, "events"),
        ({"events": [{"a": 1}]}, "events"),
        ({"application": "no-such-token"}, "application"),
        ({"application": ["x"]}, "application"),
        ({"include_private": "maybe"}, "include_private"),
        ({"description": "x" * 501}, "description"),
    ],
)
def test_bad_input_is_a_400_that_writes_nothing(tenant_a, tenant_a_admin_api, body, field):
    response = _create(tenant_a_admin_api, **body)

    assert response.status_code == 400
    assert field in response.json()
    assert _count(tenant_a) == 0


@pytest.mark.parametrize("raw", [b'{"url": "http://a\\u0000b.example/x", "events": ["*"]}', b'{"url": "http://x.example/\\ud800", "events": ["*"]}', b"{"])
def test_nul_surrogates_and_broken_json_are_400(tenant_a, tenant_a_admin_api, raw):
    response = tenant_a_admin_api.generic("POST", "/api/webhook-endpoints", raw, content_type="application/json")

    assert response.status_code == 400
    assert "detail" in response.json() or "url" in response.json()
    assert _count(tenant_a) == 0


def test_a_private_url_is_refused_when_the_guard_is_on(tenant_a, tenant_a_admin_api, settings):
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE = False
    for url in ("http://127.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]/x", "http://10.0.0.1/"):
        response = _create(tenant_a_admin_api, url=url)
        assert response.status_code == 400, url
        assert "webhooks may only call public hosts" in response.json()["url"][0]
    endpoint_id = _create(tenant_a_admin_api, url="http://93.184.215.14/hook").json()["id"]
    patched = tenant_a_admin_api.patch(f"/api/webhook-endpoints/{endpoint_id}", {"url": "http://127.0.0.1/x"}, format="json")
    assert patched.status_code == 400
    assert _count(tenant_a) == 1


def test_agents_and_anonymous_are_refused(tenant_a, tenant_a_admin_api):
    endpoint_id = _create(tenant_a_admin_api).json()["id"]
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    for api in (api_client(tenant=tenant_a, token=token_for(agent, tenant=tenant_a)), api_client(tenant=tenant_a)):
        assert _create(api).status_code in (401, 403)
        assert api.get(f"/api/webhook-endpoints/{endpoint_id}/deliveries").status_code in (401, 403)
        assert api.post(f"/api/webhook-endpoints/{endpoint_id}/rotate-secret").status_code in (401, 403)
    assert _count(tenant_a) == 1


def test_another_tenants_endpoint_and_delivery_are_404(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    endpoint_id = _create(tenant_a_admin_api).json()["id"]
    with schema_context(tenant_a.schema_name):
        event_record(type="chat.sla_breached", data={})
        delivery_id = Delivery.objects.get().id

    assert tenant_b_admin_api.get(f"/api/webhook-endpoints/{endpoint_id}").status_code == 404
    assert tenant_b_admin_api.patch(f"/api/webhook-endpoints/{endpoint_id}", {"description": "x"}, format="json").status_code == 404
    assert tenant_b_admin_api.delete(f"/api/webhook-endpoints/{endpoint_id}").status_code == 404
    assert tenant_b_admin_api.post(f"/api/webhook-endpoints/{endpoint_id}/rotate-secret").status_code == 404
    assert tenant_b_admin_api.get(f"/api/webhook-endpoints/{endpoint_id}/deliveries").status_code == 404
    assert tenant_b_admin_api.post(f"/api/webhook-deliveries/{delivery_id}/redeliver").status_code == 404
    assert tenant_b_admin_api.get("/api/webhook-endpoints").json()["data"] == []
    assert tenant_a_admin_api.get(f"/api/webhook-endpoints/{uuid.uuid4()}").status_code == 404
    assert tenant_a_admin_api.get("/api/webhook-endpoints/not-a-uuid").status_code == 404
    assert _count(tenant_a) == 1


def test_deliveries_list_filters_by_status_and_redeliver_is_202(tenant_a, tenant_a_admin_api):
    endpoint_id = _create(tenant_a_admin_api).json()["id"]
    with schema_context(tenant_a.schema_name):
        event_record(type="chat.sla_breached", data={"n": 1})
        event_record(type="chat.sla_breached", data={"n": 2})
        done, waiting = Delivery.objects.order_by("event_id")
        Delivery.objects.filter(id=done.id).update(status="succeeded", attempts=1, last_status_code=200)
        TenantWork.objects.all().delete()

    url = f"/api/webhook-endpoints/{endpoint_id}/deliveries"
    everything = tenant_a_admin_api.get(url).json()["data"]
    assert len(everything) == 2 and set(everything[0]) == DELIVERY_FIELDS
    succeeded = tenant_a_admin_api.get(url, {"status": "succeeded"}).json()["data"]
    assert [(item["id"], item["status"], item["event_type"], item["next_attempt_at"]) for item in succeeded] == [
        (str(done.id), "succeeded", "chat.sla_breached", None)
    ]
    assert succeeded[0]["event_id"].startswith("evt_")
    assert [item["id"] for item in tenant_a_admin_api.get(url, {"status": "pending"}).json()["data"]] == [str(waiting.id)]
    assert tenant_a_admin_api.get(url, {"status": "exploded"}).status_code == 400

    redelivered = tenant_a_admin_api.post(f"/api/webhook-deliveries/{done.id}/redeliver")
    assert redelivered.status_code == 202
    assert (redelivered.json()["status"], redelivered.json()["attempts"]) == ("pending", 0)
    # the tenant's webhooks mark is set for the run (the safety net if the run sent on commit is lost)
    assert TenantWork.objects.filter(tenant=tenant_a, kind="webhooks").exists()
    assert tenant_a_admin_api.post(f"/api/webhook-deliveries/{uuid.uuid4()}/redeliver").status_code == 404


def test_redeliver_on_an_inactive_endpoint_is_409(tenant_a, tenant_a_admin_api):
    endpoint_id = _create(tenant_a_admin_api).json()["id"]
    with schema_context(tenant_a.schema_name):
        event_record(type="chat.sla_breached", data={})
        delivery = Delivery.objects.get()
    tenant_a_admin_api.patch(f"/api/webhook-endpoints/{endpoint_id}", {"is_active": False}, format="json")

    response = tenant_a_admin_api.post(f"/api/webhook-deliveries/{delivery.id}/redeliver")

    assert response.status_code == 409
    assert response.json() == {"detail": "The endpoint is inactive; activate it first."}
    with schema_context(tenant_a.schema_name):
        delivery.refresh_from_db()
        assert delivery.status == "pending"
