"""Deleting a tenant while its API is in use: its requests answer 404 (or 503 with Retry-After) during and after
the deletion, never 500 or 401, and of two DELETEs at once one deletes (204) and the other gets 404."""

import threading
import time
from collections import Counter

from django.conf import settings
from django.db import connection, connections
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from agents.services import agent_create
from core.tests.support import make_user, PASSWORD, token_for
from conversations.services import application_create
from core.models import User
from core.services import user_delete
from tenants.models import Tenant

ALLOWED_DURING_DELETION = {200, 202, 404, 503}


def _client(host: str, token: str | None = None) -> APIClient:
    # A 500 must come back as a response (as a server sends it), not as the test client's re-raised exception.
    client = APIClient(HTTP_HOST=host, raise_request_exception=False)
    client.default_format = "json"
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_a_tenant_deleted_under_traffic_answers_404_never_500_and_only_one_delete_wins(make_live_tenant):
    # given a tenant with an application, chats and an admin and an agent using its API
    tenant = make_live_tenant("doomed")
    host = f"{tenant.schema_name}.{settings.BASE_DOMAIN}"
    with schema_context(tenant.schema_name):
        application = application_create(name="Doomed")
        admin = User.objects.get(role=User.Role.ADMIN)
        agent = agent_create(email="agent@doomed.test", password=PASSWORD)
    admin_token, agent_token = token_for(admin, tenant=tenant), token_for(agent.user, tenant=tenant)
    operator = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    operator_token = token_for(operator, tenant=None)
    connection.set_schema_to_public()
    chats = f"/api/applications/{application.token}/chats"
    requests = [
        (None, "post", chats, {"customer_id": "c1"}),
        (None, "get", chats, None),
        (None, "post", f"{chats}/1/messages", {"body": "hello"}),
        (admin_token, "get", "/api/agents", None),
        (agent_token, "get", "/api/chats", None),
        (admin_token, "get", "/api/tickets", None),
        (None, "post", "/api/auth/token", {"email": admin.email, "password": PASSWORD}),
    ]
    answers: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def hammer(offset: int):
        clients = {token: _client(host, token) for token in (None, admin_token, agent_token)}
        index = offset
        try:
            while not stop.is_set():
                token, method, path, body = requests[index % len(requests)]
                index += 1
                response = getattr(clients[token], method)(path, data=body) if body else getattr(clients[token], method)(path)
                answers.append((f"{method.upper()} {path}", response.status_code, response.content[:200].decode(errors="replace")))
        finally:
            connections.close_all()

    deletes: list[int] = []
    barrier = threading.Barrier(2)

    def delete():
        try:
            barrier.wait()
            deletes.append(_client(settings.BASE_DOMAIN, operator_token).delete(f"/api/tenants/{tenant.id}").status_code)
        finally:
            connections.close_all()

    hammers = [threading.Thread(target=hammer, args=(offset,)) for offset in range(6)]
    for thread in hammers:
        thread.start()
    try:
        time.sleep(0.5)  # traffic flowing

        # when two DELETEs arrive at once while the traffic goes on
        deleters = [threading.Thread(target=delete) for _ in range(2)]
        for thread in deleters:
            thread.start()
        for thread in deleters:
            thread.join(120)
        time.sleep(0.5)  # and traffic after the deletion
    finally:
        stop.set()
        for thread in hammers:
            thread.join(30)
        connection.set_schema_to_public()
        user_delete(user=operator)

    # then one DELETE deleted the tenant and the other found nothing to delete
    assert sorted(deletes) == [204, 404]
    assert not Tenant.objects.filter(id=tenant.id).exists()
    # and no request of the tenant failed otherwise than 404 / 503: no 500, no 401 from a half-dropped schema
    statuses = Counter(status for _, status, _ in answers)
    wrong = [answer for answer in answers if answer[1] not in ALLOWED_DURING_DELETION]
    assert wrong == [], f"{len(wrong)} wrong answers of {len(answers)} ({dict(statuses)}): {wrong[:5]}"
    assert statuses[404] > 0 and len(answers) > 50
    # and afterwards the host is unknown
    assert _client(host, admin_token).get("/api/agents").status_code == 404


def test_a_request_already_past_the_host_lookup_when_the_schema_is_dropped_gets_404(make_live_tenant, monkeypatch):
    # given requests that looked their host up just before the tenant's deletion (stale tenant object), and then
    # run on its dropped schema, where table names fall through to the public schema or to nothing
    from core import middleware
    from tenants.services import tenant_delete

    tenant = make_live_tenant("dropped")
    host = f"{tenant.schema_name}.{settings.BASE_DOMAIN}"
    with schema_context(tenant.schema_name):
        application = application_create(name="Dropped")
        admin = User.objects.get(role=User.Role.ADMIN)
    admin_token = token_for(admin, tenant=tenant)
    connection.set_schema_to_public()
    tenant_delete(tenant=tenant)
    monkeypatch.setattr(middleware, "tenant_get_for_hostname", lambda hostname: tenant)

    # when they reach their views
    answers = {
        "client list": _client(host).get(f"/api/applications/{application.token}/chats"),
        "admin list": _client(host, admin_token).get("/api/agents"),
        "sign-in": _client(host).post("/api/auth/token", {"email": admin.email, "password": PASSWORD}),
        "create": _client(host).post(f"/api/applications/{application.token}/chats", {"customer_id": "c1"}),
    }
    connection.set_schema_to_public()

    # then each is told the host is unknown (before: a 500 for the missing tables, a 401 for the token looked up
    # in the public schema's token table, a 400 for the password)
    assert {name: (response.status_code, response.json()) for name, response in answers.items()} == {
        name: (404, {"detail": f'No tenant is served at host "{host}".'}) for name in answers
    }


def test_a_deletion_in_progress_is_not_started_again_but_one_that_died_is_taken_over(make_live_tenant):
    from datetime import timedelta

    import pytest
    from django.core.management import CommandError, call_command
    from django.utils import timezone

    from tenants.services import TenantNotFound, tenant_delete

    # given a tenant whose deletion started a moment ago (another request, still draining its tasks)
    tenant = make_live_tenant("claimed")
    Tenant.objects.filter(id=tenant.id).update(deleting_since=timezone.now())

    # then another deletion finds it gone, through the service and the command, and it is not served any more
    with pytest.raises(TenantNotFound):
        tenant_delete(tenant=tenant)
    with pytest.raises(CommandError, match="already being deleted"):
        call_command("tenant_delete", tenant.schema_name)
    assert _client(f"{tenant.schema_name}.{settings.BASE_DOMAIN}").get("/health").status_code == 404
    assert Tenant.objects.filter(id=tenant.id).exists()

    # when that deletion died long ago, the next one takes it over and finishes
    long_ago = timezone.now() - timedelta(seconds=settings.TENANT_DELETE_DRAIN_SECONDS + 301)
    Tenant.objects.filter(id=tenant.id).update(deleting_since=long_ago)
    tenant_delete(tenant=tenant)
    assert not Tenant.objects.filter(id=tenant.id).exists()
