"""The process-local routing cache (core.routing): hosts and application tokens served without PostgreSQL, and
never once the tenant, domain or application is gone, in this process at once and in others right after."""

import os
import subprocess
import sys

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from core.tests.fixtures.workers import _test_database_url

from core.tests.support import api_client, ROOT, wait_for
from conversations import creations, services
from conversations.models import Application
from conversations.services import application_create
from core import routing


@pytest.fixture
def routing_listening(monkeypatch):
    """The routing listener of this process running and subscribed (the first request starts it). Creations
    stay queued in Redis: no drain task is sent (no worker runs here)."""
    monkeypatch.setattr(services, "_drain_schedule", lambda: None)
    routing.routing_listener_ensure()
    wait_for(lambda: routing.routing_generation() is not None, timeout=5, message="the routing listener")


def _chat_create(tenant, application: Application):
    return api_client(tenant=tenant).post(f"/api/applications/{application.token}/chats", {})


def test_a_warm_create_request_reads_nothing_from_postgres(tenant_a, routing_listening):
    # given an application whose host and token one request already resolved
    with schema_context(tenant_a.schema_name):
        application = application_create(name="Hot path")
    assert _chat_create(tenant_a, application).status_code == 202
    connection.set_schema_to_public()  # as a request for another tenant would leave it

    # when more chats and messages are created
    with CaptureQueriesContext(connection) as queries:
        chat = _chat_create(tenant_a, application)
        message = api_client(tenant=tenant_a).post(f"/api/applications/{application.token}/chats/1/messages", {"body": "hi"})

    # then the host and the token came from the cache: not one query (only Redis was asked)
    assert (chat.status_code, chat.json()) == (202, {"number": 2})
    assert (message.status_code, message.json()) == (202, {"chat_number": 1, "number": 1})
    assert [query["sql"] for query in queries.captured_queries] == []


def test_a_deleted_application_token_is_404_at_once(tenant_a, routing_listening):
    # given a token served from the cache
    with schema_context(tenant_a.schema_name):
        application = application_create(name="Doomed")
    assert _chat_create(tenant_a, application).status_code == 202

    # when the application is deleted (as the tenant admin does)
    with schema_context(tenant_a.schema_name):
        Application.objects.filter(id=application.id).delete()
        pending_before = creations.pending_count()

    # then its token is unknown at once, and nothing more is queued for it
    response = _chat_create(tenant_a, application)
    assert (response.status_code, response.json()) == (404, {"detail": "No application with this token."})
    with schema_context(tenant_a.schema_name):
        assert creations.pending_count() == pending_before


def test_the_same_token_in_two_tenants_is_never_answered_from_the_other(tenant_a, tenant_b, routing_listening):
    # given two tenants whose applications share a token (unique per schema only), A's cached first
    token = "shared-token-0123456789abcdefghij"
    with schema_context(tenant_a.schema_name):
        app_a = Application.objects.create(id=900_001, name="A", token=token)
    with schema_context(tenant_b.schema_name):
        app_b = Application.objects.create(id=900_002, name="B", token=token)
    assert _chat_create(tenant_a, app_a).status_code == 202

    # when B's host is asked with the same token
    response = _chat_create(tenant_b, app_b)

    # then B's own application took it: the creation is queued in B's list with B's application id
    assert (response.status_code, response.json()) == (202, {"number": 1})
    with schema_context(tenant_b.schema_name):
        assert [record["app"] for record in creations.pending_peek(10)] == [app_b.id]
    with schema_context(tenant_a.schema_name):
        assert [record["app"] for record in creations.pending_peek(10)] == [app_a.id]


def test_a_deleted_tenants_host_is_404_at_once_in_this_process(make_live_tenant, routing_listening):
    from tenants.services import tenant_delete

    # given a tenant whose host and application are cached
    tenant = make_live_tenant("gone")
    with schema_context(tenant.schema_name):
        application = application_create(name="Widget")
    connection.set_schema_to_public()
    assert _chat_create(tenant, application).status_code == 202

    # when it is deleted
    tenant_delete(tenant=tenant)

    # then its host is unknown on the very next request
    response = _chat_create(tenant, application)
    assert response.status_code == 404
    assert response.json() == {"detail": f'No tenant is served at host "{tenant.schema_name}.localhost".'}


def test_a_tenant_deleted_by_another_process_is_404_here_right_after(make_live_tenant, routing_listening):
    # given a tenant whose host and application this process has cached
    tenant = make_live_tenant("elsewhere")
    with schema_context(tenant.schema_name):
        application = application_create(name="Widget")
    connection.set_schema_to_public()
    assert _chat_create(tenant, application).status_code == 202
    generation = routing.routing_generation()

    # when another process deletes it
    env = {**os.environ, "DATABASE_URL": _test_database_url()}
    subprocess.run([sys.executable, "manage.py", "tenant_delete", tenant.schema_name], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip

    # then this process hears of it (pub/sub) and stops serving the host
    wait_for(lambda: routing.routing_generation() != generation, timeout=5, message="the routing change")
    response = _chat_create(tenant, application)
    assert response.status_code == 404
