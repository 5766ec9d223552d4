"""The tenant admin: agents with on/offline actions and capacity, the waiting queue with its actions."""

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from agents.models import Agent
from agents.services import assignment_run, chat_resolve
from core.tests.support import host_of, PASSWORD
from conversations.models import Chat


@pytest.fixture
def admin_client(tenant_a, tenant_a_admin) -> Client:
    client = Client(HTTP_HOST=host_of(tenant_a))
    assert (
        client.post("/admin/login/", {"username": tenant_a_admin.email, "password": PASSWORD, "next": "/admin/"}).status_code
        == 302
    )
    return client


def test_agents_are_listed_and_set_online_and_offline_by_actions(tenant_a, admin_client, make_agent, runs):
    agent = make_agent(max_customers=3, is_online=False)
    runs.scheduled = 0

    page = admin_client.get("/admin/agents/agent/")
    assert page.status_code == 200
    assert agent.user.email.encode() in page.content

    online = admin_client.post("/admin/agents/agent/", {"action": "set_online", "_selected_action": [agent.pk]})
    assert online.status_code == 302
    with schema_context(tenant_a.schema_name):
        assert Agent.objects.get(pk=agent.pk).is_online is True
    assert runs.scheduled == 1

    admin_client.post("/admin/agents/agent/", {"action": "set_offline", "_selected_action": [agent.pk]})
    with schema_context(tenant_a.schema_name):
        assert Agent.objects.get(pk=agent.pk).is_online is False

    edited = admin_client.post(
        f"/admin/agents/agent/{agent.pk}/change/", {"is_online": "on", "max_customers": 5, "qiscus_agent_id": "77"}
    )
    assert edited.status_code == 302
    with schema_context(tenant_a.schema_name):
        assert list(Agent.objects.filter(pk=agent.pk).values_list("is_online", "max_customers", "qiscus_agent_id")) == [
            (True, 5, "77")
        ]


def test_the_queue_shows_positions_and_its_actions_assign_and_resolve(
    tenant_a, admin_client, application_a, make_agent, chats, runs
):
    agent = make_agent(max_customers=1)
    make_agent(max_customers=2)
    chats(tenant_a, application_a, 5)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 3  # chats 1-3; 4 and 5 wait
        waiting = {chat.number: chat.pk for chat in Chat.objects.filter(status="waiting")}
    assert sorted(waiting) == [4, 5]

    page = admin_client.get("/admin/agents/queuedchat/")
    assert page.status_code == 200
    assert page.context["cl"].result_count == 2
    assert [(chat.position, chat.number) for chat in page.context["cl"].result_list] == [(1, 4), (2, 5)]
    # nobody has room, so no "assign to" action is offered
    assert not any(name.startswith("assign_to_") for name in page.context["cl"].model_admin.get_actions(page.wsgi_request))

    resolved = admin_client.post("/admin/agents/queuedchat/", {"action": "resolve_chats", "_selected_action": [waiting[5]]})
    assert resolved.status_code == 302
    with schema_context(tenant_a.schema_name):
        chat_resolve(chat=Chat.objects.get(number=1))  # the first agent has room again
    assigned = admin_client.post(
        "/admin/agents/queuedchat/", {"action": f"assign_to_{agent.pk}", "_selected_action": [waiting[4]]}
    )
    assert assigned.status_code == 302
    with schema_context(tenant_a.schema_name):
        assert list(
            Chat.objects.filter(number__in=[4, 5]).order_by("number").values_list("status", "assigned_agent_id")
        ) == [
            ("assigned", agent.pk),
            ("resolved", None),
        ]
    assert admin_client.get("/admin/agents/assignment/").status_code == 200
    assert admin_client.get("/admin/agents/allocationsettings/").status_code == 200
