"""Escalating a chat to a ticket, and the ticket API: agents escalate, only admins change status."""

import pytest
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from core.tests.support import api_client, host_of, make_user, PASSWORD, token_for
from conversations.models import Chat, Ticket
from conversations.services import ticket_create, ticket_status_set
from conversations.tests.factories import webhook_deliver
from core.models import User


def _assign_all(tenant, agent) -> None:
    # Only the chat's assigned agent (or an admin) escalates it (conversations.access).
    with schema_context(tenant.schema_name):
        Chat.objects.update(status=Chat.Status.ASSIGNED, assigned_agent=agent, assigned_at=timezone.now())


@pytest.fixture
def chats(tenant_a, application_a, client_a, agent_a, drain):
    """Two persisted chats of application A, assigned to agent A."""
    webhook_deliver(client_a, application_a, {"customer_id": "c1", "message": "hi"})
    webhook_deliver(client_a, application_a, {"customer_id": "c2", "message": "hi"})
    drain(tenant_a)
    _assign_all(tenant_a, agent_a)


def _escalate(api, application, number: int = 1, **body):
    return api.post(
        f"/api/applications/{application.token}/chats/{number}/escalate",
        {"title": "Refund request", "description": "Charged twice", "priority": "high", **body},
    )


def _tickets(tenant) -> list[tuple]:
    with schema_context(tenant.schema_name):
        return list(Ticket.objects.order_by("id").values_list("chat__number", "title", "status", "priority"))


def test_an_agent_escalates_a_chat_to_a_ticket(tenant_a, application_a, chats, agent_a, agent_a_api):
    response = _escalate(agent_a_api, application_a)

    assert response.status_code == 201
    body = response.json()
    with schema_context(tenant_a.schema_name):
        ticket = Ticket.objects.get()
        assert (ticket.created_by_id, ticket.assigned_agent_id, ticket.chat.number) == (agent_a.id, agent_a.id, 1)
    assert body == {
        "id": ticket.id,
        "application": application_a.token,
        "chat_number": 1,
        "title": "Refund request",
        "description": "Charged twice",
        "status": "open",
        "priority": "high",
        "assigned_agent": agent_a.id,
        "created_at": ticket.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": ticket.updated_at.isoformat().replace("+00:00", "Z"),
    }


def test_description_and_priority_may_be_left_out(tenant_a, application_a, chats, agent_a_api):
    response = agent_a_api.post(f"/api/applications/{application_a.token}/chats/1/escalate", {"title": "Just a title"})

    assert response.status_code == 201
    assert (response.json()["description"], response.json()["priority"]) == ("", "medium")


def test_a_second_escalation_of_the_same_chat_is_409(tenant_a, application_a, chats, agent_a_api):
    first = _escalate(agent_a_api, application_a)
    second = _escalate(agent_a_api, application_a, title="Again")
    other_chat = _escalate(agent_a_api, application_a, number=2, priority="low")

    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json() == {"detail": "This chat already has a ticket."}
    assert other_chat.status_code == 201
    assert _tickets(tenant_a) == [(1, "Refund request", "open", "high"), (2, "Refund request", "open", "low")]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"title": None}, "title"),
        ({"priority": "urgent"}, "priority"),
        ({"priority": "HIGH"}, "priority"),
        ({"description": None}, "description"),
    ],
)
def test_bad_escalations_are_400_and_write_nothing(tenant_a, application_a, chats, agent_a_api, body, field):
    response = _escalate(agent_a_api, application_a, **body)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert _tickets(tenant_a) == []


def test_escalating_an_unknown_or_unpersisted_chat_is_404(tenant_a, application_a, chats, client_a, agent_a_api):
    webhook_deliver(client_a, application_a, {"customer_id": "c3", "message": "hi"})  # chat 3, queued only

    assert _escalate(agent_a_api, application_a, number=3).status_code == 404
    assert _escalate(agent_a_api, application_a, number=99).status_code == 404
    assert agent_a_api.post("/api/applications/nope/chats/1/escalate", {"title": "x"}).status_code == 404
    assert _tickets(tenant_a) == []


def test_an_agent_escalates_only_the_chats_assigned_to_it(tenant_a, application_a, chats, client_a, agent_a, drain):
    # given chat 1 assigned to agent A, chat 3 waiting for anyone, and another agent
    colleague = make_user(tenant=tenant_a, role=User.Role.AGENT)
    colleague_api = api_client(tenant=tenant_a, token=token_for(colleague, tenant=tenant_a))
    webhook_deliver(client_a, application_a, {"customer_id": "c3", "message": "hi"})
    drain(tenant_a)

    # when the colleague escalates them
    answers = [_escalate(colleague_api, application_a, number=number) for number in (1, 3)]

    # then both are refused and nothing is written
    assert [answer.status_code for answer in answers] == [403, 403]
    assert answers[0].json() == {"detail": "Only the chat's assigned agent or an admin may escalate it."}
    assert _tickets(tenant_a) == []


def test_admins_and_customers_do_not_escalate(tenant_a, application_a, chats, client_a, tenant_a_admin_api):
    by_admin = _escalate(tenant_a_admin_api, application_a)
    by_customer = _escalate(client_a, application_a)

    assert by_admin.status_code == 403
    assert by_admin.json() == {"detail": "Only this tenant's agents may do this."}
    assert by_customer.status_code == 401
    assert _tickets(tenant_a) == []


@pytest.fixture
def tickets(tenant_a, application_a, client_a, agent_a, drain) -> list[Ticket]:
    """Three tickets on chats 1-3, oldest first: (open, high), (resolved, low), (open, low)."""
    for customer in ("c1", "c2", "c3"):
        webhook_deliver(client_a, application_a, {"customer_id": customer, "message": "hi"})
    drain(tenant_a)
    _assign_all(tenant_a, agent_a)
    made = []
    with schema_context(tenant_a.schema_name):
        for number, priority in ((1, "high"), (2, "low"), (3, "low")):
            chat = Chat.objects.get(number=number)
            made.append(ticket_create(chat=chat, title=f"T{number}", description="", priority=priority, created_by=agent_a))
        ticket_status_set(ticket=made[1], status="resolved")
    return made


def test_staff_list_tickets_newest_first_with_filters(tenant_a, tickets, agent_a_api, tenant_a_admin_api):
    def titles(query: str = "", api=agent_a_api) -> list[str]:
        response = api.get(f"/api/tickets?{query}")
        assert response.status_code == 200
        return [ticket["title"] for ticket in response.json()["data"]]

    assert titles() == ["T3", "T2", "T1"]
    assert titles(api=tenant_a_admin_api) == ["T3", "T2", "T1"]
    assert titles("status=open") == ["T3", "T1"]
    assert titles("priority=low") == ["T3", "T2"]
    assert titles("status=open&priority=low") == ["T3"]
    assert titles("status=closed") == []
    page = agent_a_api.get("/api/tickets?limit=2").json()
    assert [ticket["title"] for ticket in page["data"]] == ["T3", "T2"]
    assert titles(f"limit=2&cursor={page['next_cursor']}") == ["T1"]


@pytest.mark.parametrize("query, field", [("status=done", "status"), ("priority=urgent", "priority")])
def test_bad_ticket_filters_are_400(tenant_a, agent_a_api, query, field):
    response = agent_a_api.get(f"/api/tickets?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_staff_read_one_ticket(tenant_a, application_a, tickets, agent_a, agent_a_api):
    response = agent_a_api.get(f"/api/tickets/{tickets[1].id}")

    assert response.status_code == 200
    fields = ("id", "application", "chat_number", "status", "priority", "assigned_agent")
    assert {key: response.json()[key] for key in fields} == {
        "id": tickets[1].id,
        "application": application_a.token,
        "chat_number": 2,
        "status": "resolved",
        "priority": "low",
        "assigned_agent": agent_a.id,
    }
    missing = agent_a_api.get("/api/tickets/999999")
    assert (missing.status_code, missing.json()) == (404, {"detail": "No ticket with this id."})


def test_an_agent_cannot_change_a_tickets_status(tenant_a, tickets, agent_a_api):
    with schema_context(tenant_a.schema_name):
        before = Ticket.objects.values("status", "updated_at").get(id=tickets[0].id)

    response = agent_a_api.patch(f"/api/tickets/{tickets[0].id}", {"status": "closed"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Only this tenant's admins may do this."}
    with schema_context(tenant_a.schema_name):
        assert Ticket.objects.values("status", "updated_at").get(id=tickets[0].id) == before


def test_an_admin_changes_a_tickets_status(tenant_a, tickets, tenant_a_admin_api):
    response = tenant_a_admin_api.patch(f"/api/tickets/{tickets[0].id}", {"status": "in_progress"})

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["priority"]) == (tickets[0].id, "in_progress", "high")
    with schema_context(tenant_a.schema_name):
        ticket = Ticket.objects.get(id=tickets[0].id)
        assert ticket.status == "in_progress"
        assert ticket.updated_at > tickets[0].updated_at
    assert tenant_a_admin_api.patch(f"/api/tickets/{tickets[0].id}", {"status": "closed"}).json()["status"] == "closed"


@pytest.mark.parametrize("body", [{}, {"status": "done"}, {"status": None}, {"status": "Open"}])
def test_an_invalid_status_is_400_and_changes_nothing(tenant_a, tickets, tenant_a_admin_api, body):
    response = tenant_a_admin_api.patch(f"/api/tickets/{tickets[0].id}", body)

    assert response.status_code == 400
    assert list(response.json()) == ["status"]
    with schema_context(tenant_a.schema_name):
        assert Ticket.objects.get(id=tickets[0].id).status == "open"


def test_patching_an_unknown_ticket_is_404(tenant_a, tenant_a_admin_api):
    assert tenant_a_admin_api.patch("/api/tickets/999999", {"status": "closed"}).status_code == 404


# --- the tenant admin site ----------------------------------------------------------------------------------------


def test_the_tenant_admin_filters_and_searches_tickets_and_chats(tenant_a, tickets):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant_a))
    client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"})

    listed = client.get("/admin/conversations/ticket/?status__exact=open&priority__exact=low")
    searched = client.get("/admin/conversations/ticket/?q=T2")
    application_id = tickets[0].chat.application_id
    chats = client.get(f"/admin/conversations/chat/?status__exact=assigned&application__id__exact={application_id}")
    by_date = client.get(f"/admin/conversations/chat/?created_at__year={timezone.now().year}")

    assert listed.status_code == searched.status_code == chats.status_code == by_date.status_code == 200
    assert listed.context["cl"].result_count == 1 and list(listed.context["cl"].result_list) == [tickets[2]]
    assert list(searched.context["cl"].result_list) == [tickets[1]]
    assert chats.context["cl"].result_count == 3
    assert by_date.context["cl"].result_count == 3


def test_the_admin_action_closes_tickets(tenant_a, tickets):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant_a))
    client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"})

    response = client.post(
        "/admin/conversations/ticket/", {"action": "mark_closed", "_selected_action": [tickets[0].id, tickets[2].id]}
    )

    assert response.status_code == 302
    assert _tickets(tenant_a) == [(1, "T1", "closed", "high"), (2, "T2", "resolved", "low"), (3, "T3", "closed", "low")]
