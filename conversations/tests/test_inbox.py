"""The staff side of the inbox: the chat list across applications, who may reply, tenant isolation."""

from types import SimpleNamespace

import pytest
from django_tenants.utils import schema_context

from core.tests.support import api_client, make_user, PASSWORD, token_for, wait_for
from conversations import creations, services
from conversations.models import Chat, Message, Ticket
from conversations.tests.factories import webhook_deliver
from core.models import User


def _pending(tenant) -> int:
    with schema_context(tenant.schema_name):
        return creations.pending_count()


def _assign(tenant, number: int, agent: User, application=None) -> None:
    with schema_context(tenant.schema_name):
        chats = Chat.objects.filter(number=number)
        if application is not None:
            chats = chats.filter(application=application)
        assert chats.update(assigned_agent=agent, status=Chat.Status.ASSIGNED) == 1


@pytest.fixture
def two_applications_with_chats(tenant_a, application_a, client_a, drain):
    """Chats 1-3 in application A and chat 1 in a second application, persisted, oldest first."""
    with schema_context(tenant_a.schema_name):
        other = services.application_create(name="Other")
    for customer in ("a1", "a2", "a3"):
        webhook_deliver(client_a, application_a, {"customer_id": customer, "message": "hi"})
    webhook_deliver(client_a, other, {"customer_id": "o1", "message": "hi"})
    drain(tenant_a)
    return application_a, other


def test_the_inbox_lists_every_applications_chats_newest_first(tenant_a, two_applications_with_chats, agent_a_api):
    application, other = two_applications_with_chats

    response = agent_a_api.get("/api/chats")

    assert response.status_code == 200
    data = response.json()["data"]
    assert [(chat["application"], chat["number"], chat["customer_id"]) for chat in data] == [
        (other.token, 1, "o1"), (application.token, 3, "a3"), (application.token, 2, "a2"), (application.token, 1, "a1"),
    ]  # fmt: skip
    assert response.json()["next_cursor"] is None
    newest = data[0]
    assert newest == {
        "application": other.token,
        "number": 1,
        "status": "waiting",
        "customer_id": "o1",
        "assigned_agent": None,
        "messages_count": 1,
        "created_at": newest["created_at"],
        "assigned_at": None,
        "resolved_at": None,
        "sla": None,
        "labels": [],
    }


def test_the_inbox_pages_with_a_cursor(tenant_a, two_applications_with_chats, agent_a_api):
    first = agent_a_api.get("/api/chats?limit=3").json()
    rest = agent_a_api.get(f"/api/chats?limit=3&cursor={first['next_cursor']}").json()

    assert [chat["customer_id"] for chat in first["data"]] == ["o1", "a3", "a2"]
    assert [chat["customer_id"] for chat in rest["data"]] == ["a1"]
    assert rest["next_cursor"] is None


def test_the_inbox_filters_by_status_and_agent(tenant_a, two_applications_with_chats, agent_a, agent_a_api, tenant_a_admin_api):
    application, other = two_applications_with_chats
    colleague = make_user(tenant=tenant_a, role=User.Role.AGENT)
    _assign(tenant_a, 1, agent_a, application)
    _assign(tenant_a, 1, colleague, other)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(application=application, number=2).update(status=Chat.Status.RESOLVED)

    def customers(query: str, api=agent_a_api) -> list[str]:
        response = api.get(f"/api/chats?{query}")
        assert response.status_code == 200
        return [chat["customer_id"] for chat in response.json()["data"]]

    assert customers("status=waiting") == ["a3"]
    assert customers("status=assigned") == ["o1", "a1"]
    assert customers("status=resolved") == ["a2"]
    assert customers("agent=me") == ["a1"]
    assert customers(f"agent={colleague.id}") == ["o1"]
    assert customers(f"agent={colleague.id}", api=tenant_a_admin_api) == ["o1"]
    assert customers("agent=me", api=tenant_a_admin_api) == []
    assert customers("agent=me&status=assigned") == ["a1"]
    assert customers("agent=me&status=waiting") == []
    assert customers("status=&agent=") == ["o1", "a3", "a2", "a1"]  # empty filters are no filters


@pytest.mark.parametrize(
    "query, field",
    [
        ("status=open", "status"), ("status=WAITING", "status"),
        ("agent=bob", "agent"), ("agent=0", "agent"), ("agent=-1", "agent"), ("agent=1.5", "agent"),
    ],  # fmt: skip
)
def test_bad_inbox_filters_are_400(tenant_a, agent_a_api, query, field):
    response = agent_a_api.get(f"/api/chats?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_the_inbox_needs_a_staff_token(tenant_a, client_a):
    assert client_a.get("/api/chats").status_code == 401
    assert api_client(tenant=tenant_a, token="not-a-token").get("/api/chats").status_code == 401


# --- replies --------------------------------------------------------------------------------------------------


def _reply(api, application, number: int, body: str = "On it."):
    return api.post(f"/api/applications/{application.token}/chats/{number}/messages", {"body": body})


def test_an_agent_who_is_not_assigned_cannot_reply_and_nothing_is_queued(
    tenant_a, application_a, client_a, agent_a, agent_a_api, drain
):
    # given chat 1 assigned to a colleague, chat 2 assigned to nobody, chat 3 not persisted yet
    colleague = make_user(tenant=tenant_a, role=User.Role.AGENT)
    webhook_deliver(client_a, application_a, {"customer_id": "c1", "message": "hi"})
    webhook_deliver(client_a, application_a, {"customer_id": "c2", "message": "hi"})
    drain(tenant_a)
    _assign(tenant_a, 1, colleague)
    webhook_deliver(client_a, application_a, {"customer_id": "c3", "message": "hi"})
    pending_before = _pending(tenant_a)

    responses = [_reply(agent_a_api, application_a, number) for number in (1, 2, 3)]

    assert [response.status_code for response in responses] == [403, 403, 403]
    assert responses[0].json() == {"detail": "Only the chat's assigned agent or an admin may reply."}
    assert _pending(tenant_a) == pending_before
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        assert Message.objects.filter(sender=Message.Sender.AGENT).count() == 0


def test_the_assigned_agent_and_admins_reply(
    tenant_a, application_a, client_a, agent_a, agent_a_api, tenant_a_admin, tenant_a_admin_api, drain
):
    webhook_deliver(client_a, application_a, {"customer_id": "c1", "message": "hi"})
    drain(tenant_a)
    _assign(tenant_a, 1, agent_a)
    webhook_deliver(client_a, application_a, {"customer_id": "c2", "message": "hi"})  # chat 2, not persisted yet

    by_agent = _reply(agent_a_api, application_a, 1, "Agent here.")
    by_admin = _reply(tenant_a_admin_api, application_a, 1, "Supervisor here.")
    by_admin_early = _reply(tenant_a_admin_api, application_a, 2, "Before the row exists.")
    drain(tenant_a)

    assert (by_agent.status_code, by_admin.status_code, by_admin_early.status_code) == (202, 202, 202)
    assert by_agent.json() == {"chat_number": 1, "number": 2}
    assert by_admin.json() == {"chat_number": 1, "number": 3}
    assert by_admin_early.json() == {"chat_number": 2, "number": 2}
    with schema_context(tenant_a.schema_name):
        replies = Message.objects.filter(sender=Message.Sender.AGENT).order_by("chat__number", "number")
        assert list(replies.values_list("chat__number", "body", "author_id")) == [
            (1, "Agent here.", agent_a.id),
            (1, "Supervisor here.", tenant_a_admin.id),
            (2, "Before the row exists.", tenant_a_admin.id),
        ]


def test_customers_still_write_without_a_token(tenant_a, application_a, client_a, drain):
    client_a.post(f"/api/applications/{application_a.token}/chats", {})

    assert _reply(client_a, application_a, 1, "Customer again").status_code == 202


# --- tenant isolation -------------------------------------------------------------------------------------------


@pytest.fixture
def a_ticket(tenant_a, application_a, client_a, agent_a, drain) -> Ticket:
    webhook_deliver(client_a, application_a, {"customer_id": "c1", "message": "hi"})
    drain(tenant_a)
    _assign(tenant_a, 1, agent_a)
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get(number=1)
        return services.ticket_create(chat=chat, title="Refund", description="", priority="high", created_by=agent_a)


@pytest.mark.parametrize("role", [User.Role.ADMIN, User.Role.AGENT])
@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/chats", None),
        ("get", "/api/tickets", None),
        ("get", "/api/tickets/{ticket}", None),
        ("patch", "/api/tickets/{ticket}", {"status": "closed"}),
        ("post", "/api/applications/{token}/chats/1/escalate", {"title": "x", "priority": "low"}),
        ("post", "/api/applications/{token}/chats/1/messages", {"body": "reply"}),
    ],
)
def test_every_staff_endpoint_refuses_a_token_of_another_tenant(
    tenant_a, tenant_b, application_a, a_ticket, method, path, body, role
):
    stranger = make_user(tenant=tenant_b, role=role)
    api = api_client(tenant=tenant_a, token=token_for(stranger, tenant=tenant_b))
    pending_before = _pending(tenant_a)

    response = getattr(api, method)(path.format(ticket=a_ticket.id, token=application_a.token), body)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}
    assert _pending(tenant_a) == pending_before
    with schema_context(tenant_a.schema_name):
        assert list(Ticket.objects.values_list("id", "status")) == [(a_ticket.id, "open")]


def test_another_tenant_never_sees_these_chats_or_tickets(tenant_a, tenant_b, a_ticket, tenant_b_admin_api):
    assert tenant_b_admin_api.get("/api/chats").json() == {"data": [], "next_cursor": None}
    assert tenant_b_admin_api.get("/api/tickets").json() == {"data": [], "next_cursor": None}
    assert tenant_b_admin_api.get(f"/api/tickets/{a_ticket.id}").status_code == 404
    assert tenant_b_admin_api.patch(f"/api/tickets/{a_ticket.id}", {"status": "closed"}).status_code == 404
    with schema_context(tenant_a.schema_name):
        assert Ticket.objects.get().status == "open"


# --- the full cycle ----------------------------------------------------------


@pytest.mark.worker
def test_full_cycle_through_http_with_a_real_worker(celery_worker, make_live_tenant):
    tenant = make_live_tenant("cycle", admin_email="boss@cycle.test")
    host = api_client(tenant=tenant)

    # the admin signs in and creates an application
    signed_in = host.post("/api/auth/token", {"email": "boss@cycle.test", "password": PASSWORD}).json()
    assert signed_in["role"] == "admin"
    admin = api_client(tenant=tenant, token=signed_in["token"])
    application = admin.post("/api/applications", {"name": "WhatsApp"}).json()

    # the admin creates an agent, who signs in and goes online
    created = admin.post(
        "/api/agents", {"email": "ann@cycle.test", "name": "Ann", "password": PASSWORD, "max_customers": 2}
    )
    assert created.status_code == 201
    agent_id = created.json()["id"]
    agent_login = host.post("/api/auth/token", {"email": "ann@cycle.test", "password": PASSWORD}).json()
    assert agent_login["role"] == "agent"
    agent = api_client(tenant=tenant, token=agent_login["token"])
    went_online = agent.patch(f"/api/agents/{agent_id}", {"is_online": True})
    assert (went_online.status_code, went_online.json()["is_online"]) == (200, True)

    # a signed webhook message arrives and the worker persists the chat with it
    channel = SimpleNamespace(token=application["token"], webhook_secret=application["webhook_secret"])
    delivered = webhook_deliver(host, channel, {"customer_id": "wa:+62811", "message": "My order is late", "external_id": "m-1"})
    assert delivered.json() == {"chat_number": 1, "message_number": 1}
    listed = wait_for(lambda: agent.get("/api/chats").json()["data"], message="the chat in the inbox")
    assert [(chat["application"], chat["number"], chat["customer_id"], chat["messages_count"]) for chat in listed] == [
        (application["token"], 1, "wa:+62811", 1)
    ]

    # the worker's assignment engine gives it to the online agent
    assigned = wait_for(
        lambda: [chat for chat in agent.get("/api/chats?agent=me").json()["data"] if chat["status"] == "assigned"],
        message="the chat assigned to the agent",
    )
    assert [(chat["number"], chat["assigned_agent"]) for chat in assigned] == [(1, agent_id)]
    assert agent.get(f"/api/agents/{agent_id}").json()["active_chats"] == 1

    # the agent reads and replies
    chat_url = f"/api/applications/{application['token']}/chats/1"
    assert [m["body"] for m in agent.get(f"{chat_url}/messages").json()["data"]] == ["My order is late"]
    assert agent.post(f"{chat_url}/messages", {"body": "Let me check."}).json() == {"chat_number": 1, "number": 2}
    wait_for(lambda: agent.get(f"{chat_url}/messages/2").status_code == 200, message="the reply row")
    assert agent.get(f"{chat_url}/messages/2").json()["sender"] == "agent"

    # escalates; the agent may not change the ticket's status, the admin may
    ticket = agent.post(f"{chat_url}/escalate", {"title": "Late order", "description": "Courier lost it", "priority": "high"})
    assert ticket.status_code == 201
    ticket_id = ticket.json()["id"]
    assert agent.patch(f"/api/tickets/{ticket_id}", {"status": "closed"}).status_code == 403
    with schema_context(tenant.schema_name):
        assert Ticket.objects.get(id=ticket_id).status == "open"
    changed = admin.patch(f"/api/tickets/{ticket_id}", {"status": "in_progress"})
    assert (changed.status_code, changed.json()["status"]) == (200, "in_progress")
    with schema_context(tenant.schema_name):
        assert Ticket.objects.get(id=ticket_id).status == "in_progress"
