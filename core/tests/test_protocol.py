"""HTTP as a client meets it over a real socket (gunicorn, the production server): a 413 (or any answer
given before a large body was read) leaves the keep-alive connection usable; a method a view does not declare is a 405 before any credential check."""

import http.client
import json

import pytest
from django.conf import settings

from core.tests.support import api_client
from core.tests.live_server import LiveServer


@pytest.fixture(scope="module")
def gunicorn_server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = LiveServer(name="protocol", threads=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "path, content_type, status",
    [
        ("/api/auth/token", "application/json", 413),  # DRF's parser, refused by Content-Length
        ("/api/tenants", "application/json", 401),  # refused before the body is read: no token
        ("/admin/login/", "application/x-www-form-urlencoded", 403),  # a Django form: no CSRF cookie
    ],
)
def test_a_response_that_left_a_large_body_unread_leaves_the_connection_usable(gunicorn_server, path, content_type, status):
    # given one keep-alive connection to gunicorn
    connection = http.client.HTTPConnection("127.0.0.1", gunicorn_server.port, timeout=30)
    try:
        # when a body well past the limit (and past what gunicorn drains on its own, 64 KiB) is refused
        body = b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 512 * 1024)
        connection.request("POST", path, body=body, headers={"Host": settings.BASE_DOMAIN, "Content-Type": content_type})
        refused = connection.getresponse()
        refused_body = refused.read()

        # then the client is answered, and its next request on the same connection is served
        connection.request("GET", "/health", headers={"Host": settings.BASE_DOMAIN})
        following = connection.getresponse()
        following_body = following.read()
    finally:
        connection.close()

    assert refused.status == status, refused_body[:200]
    assert (following.status, json.loads(following_body)["status"]) == (200, "ok")


QISCUS_WEBHOOKS = ["/api/integrations/qiscus/agent-allocation", "/api/integrations/qiscus/mark-as-resolved"]


@pytest.mark.parametrize("path", QISCUS_WEBHOOKS)
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_an_undeclared_method_is_405_before_any_credential_is_checked(tenant_a, path, method):
    response = getattr(api_client(tenant=tenant_a), method)(path)  # no integration key

    assert (response.status_code, response.json(), response["Allow"]) == (
        405, {"detail": f'Method "{method.upper()}" not allowed.'}, "POST, OPTIONS"
    )  # fmt: skip


def test_declared_methods_still_check_credentials_first(tenant_a):
    client = api_client(tenant=tenant_a)

    assert client.post(QISCUS_WEBHOOKS[0], {"room_id": "r"}, format="json").status_code == 401
    assert client.get("/api/scheduler").status_code == 401
    assert client.post("/api/scheduler/start").status_code == 401
    assert client.get("/api/scheduler/start").status_code == 405
    assert client.head("/api/queue").status_code == 401  # HEAD follows GET


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_qiscus_webhooks_refuse_a_body_that_is_not_json_with_415(tenant_a, content_type):
    from django_tenants.utils import schema_context

    from agents.services import allocation_settings_get

    with schema_context(tenant_a.schema_name):
        key = allocation_settings_get().qiscus_integration_key
    client = api_client(tenant=tenant_a)
    client.credentials(HTTP_X_SOCIOMILE_INTEGRATION_KEY=key)
    for path in QISCUS_WEBHOOKS:
        assert client.post(path, data=b"room_id=r", content_type=content_type).status_code == 415
