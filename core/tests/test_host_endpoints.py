import pytest

from core.tests.support import api_client
from core import redis as core_redis


@pytest.mark.parametrize("on_tenant_host", [False, True])
def test_health_is_ok_on_every_host(tenant_a, on_tenant_host):
    response = api_client(tenant=tenant_a if on_tenant_host else None).get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_health_names_redis_when_it_is_down(tenant_a, settings):
    # given a Redis URL nothing listens on
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    core_redis.get_redis.cache_clear()
    try:
        response = api_client(tenant=tenant_a).get("/health")
    finally:
        core_redis.get_redis.cache_clear()

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "redis": "error: ConnectionError"}


@pytest.mark.parametrize("host", ["localhost", "alpha.localhost", "nobody.example.com"])
def test_health_live_answers_on_any_host_without_touching_postgresql_or_redis(host, settings, monkeypatch):
    # given no database access (no `db` fixture: pytest-django raises on any query), a Redis nothing listens
    # on, and a host lookup and routing listener that fail the test if they are reached
    from core import middleware

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    core_redis.get_redis.cache_clear()

    def reached(**kwargs):
        raise AssertionError("liveness reached the host lookup")

    monkeypatch.setattr(middleware, "tenant_get_for_hostname", reached)
    monkeypatch.setattr(middleware, "routing_listener_ensure", reached)
    try:
        # when
        response = api_client().get("/health/live", HTTP_HOST=host)
    finally:
        core_redis.get_redis.cache_clear()

    # then
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_live_takes_only_get_and_head():
    client = api_client()

    assert client.head("/health/live").status_code == 200
    response = client.post("/health/live")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json() == {"detail": 'Method "POST" not allowed.'}


def test_unknown_host_is_404_json(db):
    response = api_client().get("/health", HTTP_HOST="nobody.localhost")

    assert response.status_code == 404
    assert response.json() == {"detail": 'No tenant is served at host "nobody.localhost".'}


def test_unknown_path_is_404_json(tenant_a):
    response = api_client(tenant=tenant_a).get("/api/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_each_host_documents_its_own_api(tenant_a):
    platform_paths = api_client().get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    tenant_paths = api_client(tenant=tenant_a).get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]

    assert "/api/tenants" in platform_paths
    assert "/api/auth/token" in platform_paths
    assert "/api/tenants" not in tenant_paths
    assert "/api/auth/token" in tenant_paths


@pytest.mark.parametrize("on_tenant_host", [False, True])
def test_docs_ui_is_served(tenant_a, on_tenant_host):
    response = api_client(tenant=tenant_a if on_tenant_host else None).get("/docs/")

    assert response.status_code == 200
    assert b"swagger-ui" in response.content


@pytest.mark.parametrize("urlconf", ["sociomile.urls_public", "sociomile.urls_tenants"])
def test_openapi_schemas_validate_without_warnings(urlconf, tmp_path):
    from django.core.management import call_command

    # A warning usually means two different shapes were merged into one component: a wrong schema.
    call_command("spectacular", urlconf=urlconf, validate=True, fail_on_warn=True, file=str(tmp_path / "schema.yaml"))


def test_a_request_that_needs_redis_while_it_is_down_is_503_json_naming_it(tenant_a, settings):
    # given an application, and then a Redis URL nothing listens on
    from django_tenants.utils import schema_context

    from conversations.services import application_create

    with schema_context(tenant_a.schema_name):
        application = application_create(name="Widget")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    core_redis.get_redis.cache_clear()
    client = api_client(tenant=tenant_a)
    client.raise_request_exception = False  # as in production: Django's handler500 answers
    try:
        response = client.post(f"/api/applications/{application.token}/chats", {})
    finally:
        core_redis.get_redis.cache_clear()

    # then a 503 the client can retry, not a 500 and never a 202
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json() == {"detail": "Service temporarily unavailable (redis); retry shortly."}


def test_an_unexpected_error_is_still_a_plain_500(tenant_a, monkeypatch):
    from core import middleware

    def broken(*, hostname):
        raise ValueError("a bug")

    monkeypatch.setattr(middleware, "tenant_get_for_hostname", broken)
    client = api_client(tenant=tenant_a)
    client.raise_request_exception = False
    response = client.get("/health")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
