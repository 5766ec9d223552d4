"""The audit log: every staff write leaves exactly one entry naming its actor, in the write's transaction (a
refused or rolled-back write leaves none); the log is admin-only, filtered, paginated and read-only."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from agents.models import Agent
from agents.services import agent_create, chat_resolve
from audit.models import AuditEntry
from conversations import services as conversation_services
from conversations.models import Chat
from core.models import User
from core.tests.support import PASSWORD, api_client, make_user, token_for


@pytest.fixture
def drain(monkeypatch):
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)

    def run(tenant):
        with schema_context(tenant.schema_name):
            conversation_services.creations_persist(batch_size=1000)

    return run


@pytest.fixture
def admin(tenant_a):
    user = make_user(tenant=tenant_a, role=User.Role.ADMIN, email="boss@alpha.test")
    user.api = api_client(tenant=tenant_a, token=token_for(user, tenant=tenant_a))
    return user


@pytest.fixture
def application(tenant_a):
    with schema_context(tenant_a.schema_name):
        return conversation_services.application_create(name="Support")


def _agent(tenant, email: str, *, is_online: bool = True, max_customers: int = 2) -> Agent:
    with schema_context(tenant.schema_name), transaction.atomic():
        agent = agent_create(email=email, password=PASSWORD, max_customers=max_customers, is_online=is_online)
    agent.api = api_client(tenant=tenant, token=token_for(agent.user, tenant=tenant))
    return agent


def _entries(tenant) -> list[tuple]:
    with schema_context(tenant.schema_name):
        return list(AuditEntry.objects.order_by("id").values_list("actor", "action", "target", "changes"))


def _new_entries(tenant, before: int) -> list[tuple]:
    return _entries(tenant)[before:]


def _chat(tenant, application, drain, customer_id="c-1") -> int:
    with schema_context(tenant.schema_name):
        number = conversation_services.chat_create(application=application, customer_id=customer_id)
    drain(tenant)
    return number


def test_each_staff_write_through_the_api_writes_one_entry_with_its_actor(tenant_a, admin, application, drain, monkeypatch):
    monkeypatch.setattr("agents.services.agents.assignment_schedule", lambda: None)
    monkeypatch.setattr("agents.services.assignment.assignment_schedule", lambda: None)
    agent = _agent(tenant_a, "ana@alpha.test")
    other = _agent(tenant_a, "ben@alpha.test")
    number = _chat(tenant_a, application, drain)
    chat = f"/api/applications/{application.token}/chats/{number}"
    target = f"chat {application.token}/{number}"
    steps = [
        (admin.api.post, "/api/agents", {"email": "cid@alpha.test", "password": PASSWORD, "role": "agent", "max_customers": 3}, 201,
         ("boss@alpha.test", "agent.created")),
        (admin.api.post, f"{chat}/assign", {"agent_id": agent.pk}, 200,
         ("boss@alpha.test", "chat.assigned", target, {"agent": agent.pk})),
        (admin.api.post, f"{chat}/assign", {"agent_id": other.pk}, 200,
         ("boss@alpha.test", "chat.transferred", target, {"agent": other.pk})),
        (admin.api.patch, f"/api/agents/{agent.pk}", {"max_customers": 5, "role": "admin"}, 200,
         ("boss@alpha.test", "agent.updated", f"agent {agent.pk}", {"max_customers": 5, "role": "admin", "is_staff": True, "is_superuser": True})),
        (admin.api.patch, f"/api/agents/{other.pk}", {"is_online": False}, 200,
         ("boss@alpha.test", "agent.updated", f"agent {other.pk}", {"is_online": False})),
        (other.api.patch, f"/api/agents/{other.pk}", {"is_online": True}, 200,
         ("ben@alpha.test", "agent.updated", f"agent {other.pk}", {"is_online": True})),
        (other.api.post, f"{chat}/escalate", {"title": "Refund", "description": "", "priority": "high"}, 201, None),
        (other.api.post, f"{chat}/resolve", {}, 200, ("ben@alpha.test", "chat.resolved", target, {})),
        # a tenant's scheduler runs from the start
        (admin.api.post, "/api/scheduler/stop", {}, 200, ("boss@alpha.test", "scheduler.stopped", "scheduler", {})),
        (admin.api.post, "/api/scheduler/start", {}, 200, ("boss@alpha.test", "scheduler.started", "scheduler", {})),
        (admin.api.patch, "/api/scheduler", {"batch_size": 7, "auth_key": "s3cret-key"}, 200,
         ("boss@alpha.test", "scheduler.updated", "scheduler", {"batch_size": 7, "auth_key": "[redacted]"})),
    ]
    for call, path, body, status, expected in steps:
        before = len(_entries(tenant_a))
        response = call(path, body, format="json")
        assert response.status_code == status, (path, response.content)
        new = _new_entries(tenant_a, before)
        if expected is None:
            assert new == []  # escalating is not in the audited list
        elif len(expected) == 2:
            assert [(actor, action) for actor, action, _, _ in new] == [expected]
        else:
            assert new == [expected], path
    with schema_context(tenant_a.schema_name):
        ticket_id = Chat.objects.get(application=application, number=number).ticket.id
    before = len(_entries(tenant_a))
    assert admin.api.patch(f"/api/tickets/{ticket_id}", {"status": "closed"}, format="json").status_code == 200
    assert _new_entries(tenant_a, before) == [("boss@alpha.test", "ticket.status_changed", f"ticket {ticket_id}", {"status": "closed"})]


def test_webhook_endpoint_writes_are_audited_without_their_secret(tenant_a, admin):
    before = len(_entries(tenant_a))
    created = admin.api.post("/api/webhook-endpoints", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}, format="json")
    assert created.status_code == 201
    endpoint = created.json()["id"]
    assert admin.api.patch(f"/api/webhook-endpoints/{endpoint}", {"description": "CRM"}, format="json").status_code == 200
    assert admin.api.post(f"/api/webhook-endpoints/{endpoint}/rotate-secret").status_code == 200
    assert admin.api.delete(f"/api/webhook-endpoints/{endpoint}").status_code == 204
    target = f"webhookendpoint {endpoint}"
    assert _new_entries(tenant_a, before) == [
        ("boss@alpha.test", "webhook_endpoint.created", target,
         {"url": "http://127.0.0.1:9/hook", "events": ["*"], "application": None, "include_private": False}),
        ("boss@alpha.test", "webhook_endpoint.updated", target, {"description": "CRM"}),
        ("boss@alpha.test", "webhook_endpoint.secret_rotated", target, {}),
        ("boss@alpha.test", "webhook_endpoint.deleted", target, {"url": "http://127.0.0.1:9/hook"}),
    ]  # fmt: skip
    assert "whsec_" not in str(_entries(tenant_a))


def test_a_refused_or_rolled_back_write_leaves_no_entry(tenant_a, admin, application, drain):
    offline = _agent(tenant_a, "off@alpha.test", is_online=False)
    number = _chat(tenant_a, application, drain)
    before = len(_entries(tenant_a))
    chat = f"/api/applications/{application.token}/chats/{number}"
    # refused by the service once its transaction began: an offline agent, a bad scheduler URL
    assert admin.api.post(f"{chat}/assign", {"agent_id": offline.pk}, format="json").status_code == 409
    assert admin.api.patch("/api/scheduler", {"webhook_url": "ftp://x"}, format="json").status_code == 400
    # an edit that changes nothing, and a repeated start, are not writes
    assert admin.api.patch(f"/api/agents/{offline.pk}", {"max_customers": 2}, format="json").status_code == 200
    assert admin.api.post("/api/scheduler/start").status_code == 200
    entries = _new_entries(tenant_a, before)
    assert entries == []
    # a write whose transaction rolls back after the service returned
    with schema_context(tenant_a.schema_name):
        chat_row = Chat.objects.get(application=application, number=number)
        with pytest.raises(RuntimeError), transaction.atomic():
            chat_resolve(chat=chat_row, by=None)
            raise RuntimeError("the caller's transaction fails after the resolve")
        assert Chat.objects.get(pk=chat_row.pk).status == Chat.Status.WAITING
    assert _new_entries(tenant_a, before) == entries


def test_work_without_a_signed_in_user_is_recorded_as_system(tenant_a, application, drain):
    number = _chat(tenant_a, application, drain)
    with schema_context(tenant_a.schema_name):
        chat_resolve(chat=Chat.objects.get(application=application, number=number), by=None)
    assert _entries(tenant_a)[-1] == ("system", "chat.resolved", f"chat {application.token}/{number}", {})


def test_the_log_is_filtered_and_paginated_newest_first(tenant_a, admin):
    for _ in range(3):
        admin.api.post("/api/scheduler/stop")
        admin.api.post("/api/scheduler/start")
    with schema_context(tenant_a.schema_name):
        AuditEntry.objects.create(at=timezone.now() - timedelta(days=3), actor="system", action="chat.resolved", target="chat x/1")
    everything = admin.api.get("/api/audit-log").json()["data"]
    assert [item["action"] for item in everything] == ["scheduler.started", "scheduler.stopped"] * 3 + ["chat.resolved"]
    assert set(everything[0]) == {"at", "actor", "action", "target", "changes"}
    assert len(admin.api.get("/api/audit-log", {"action": "scheduler.started"}).json()["data"]) == 3
    assert len(admin.api.get("/api/audit-log", {"actor": "BOSS@alpha.test"}).json()["data"]) == 6
    assert [item["actor"] for item in admin.api.get("/api/audit-log", {"actor": "system"}).json()["data"]] == ["system"]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert len(admin.api.get("/api/audit-log", {"since": since}).json()["data"]) == 6
    first = admin.api.get("/api/audit-log", {"limit": 4}).json()
    second = admin.api.get("/api/audit-log", {"limit": 4, "cursor": first["next_cursor"]}).json()
    assert [item["action"] for item in first["data"] + second["data"]] == [item["action"] for item in everything]
    assert second["next_cursor"] is None
    for bad in ({"since": "yesterday"}, {"limit": "0"}, {"actor": "x" * 300}):
        response = admin.api.get("/api/audit-log", bad)
        assert response.status_code == 400, bad


def test_the_access_matrix(tenant_a, tenant_b, admin, tenant_b_admin_api):
    admin.api.post("/api/scheduler/stop")
    agent = api_client(tenant=tenant_a, token=token_for(make_user(tenant=tenant_a, role=User.Role.AGENT), tenant=tenant_a))
    assert api_client(tenant=tenant_a).get("/api/audit-log").status_code == 401
    assert agent.get("/api/audit-log").status_code == 403
    assert admin.api.get("/api/audit-log").status_code == 200
    # another tenant's admin sees its own (empty) log, and its token is unknown on this host
    assert tenant_b_admin_api.get("/api/audit-log").json()["data"] == []
    foreign = api_client(tenant=tenant_a, token=tenant_b_admin_api._credentials["HTTP_AUTHORIZATION"].split()[1])
    assert foreign.get("/api/audit-log").status_code == 401
    # read-only: no write method exists
    for method in ("post", "put", "patch", "delete"):
        assert getattr(admin.api, method)("/api/audit-log").status_code == 405
