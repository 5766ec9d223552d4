"""The tenant admin at scale and its chat actions: each changelist costs the same number of queries for 1
row as for 30 (no N+1), and "assign to agent…" / "resolve" go through the agents services."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context

from agents.services import allocation_settings_get, assignment_run
from agents.tests.test_admin import admin_client  # noqa: F401  (fixture)
from conversations import services as conversation_services
from conversations.models import Chat
from core.models import User
from scheduler.services import outbound_message_create

CHANGELISTS = [
    "/admin/conversations/chat/",
    "/admin/conversations/chat/?q=hello",
    "/admin/conversations/ticket/",
    "/admin/conversations/inboundevent/",
    "/admin/conversations/application/",
    "/admin/agents/agent/",
    "/admin/agents/queuedchat/",
    "/admin/agents/assignment/",
    "/admin/scheduler/outboundmessage/",
    "/admin/core/user/",
]


def _query_counts(client) -> dict[str, int]:
    counts = {}
    for url in CHANGELISTS:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, url
        counts[url] = len(queries)
    return counts


def test_changelists_cost_the_same_queries_for_1_row_as_for_30(
    tenant_a, admin_client, application_a, make_agent, chats, runs  # noqa: F811
):
    def add_rows(count: int) -> None:
        for _ in range(count):
            make_agent(max_customers=1)
        numbers = chats(tenant_a, application_a, 2 * count, customer_prefix=uuid.uuid4().hex[:6])
        with schema_context(tenant_a.schema_name):
            assignment_run()  # `count` chats assigned (one per new agent), `count` wait
            creator = User.objects.filter(role=User.Role.ADMIN).first()
            for number in numbers:
                conversation_services.message_create(application=application_a, chat_number=number, body="hello")
            conversation_services.creations_persist(batch_size=1000)
            for chat in Chat.objects.filter(number__in=numbers[:count]):
                conversation_services.ticket_create(
                    chat=chat, title="Help", description="", priority="low", created_by=creator
                )
                conversation_services.inbound_event_record(
                    event_id=uuid.uuid4(), payload={"n": chat.number}, created_at=timezone.now()
                )
                outbound_message_create(to="+628123456789", content=f"hello {chat.number}")

    with schema_context(tenant_a.schema_name):
        allocation_settings_get()  # made on a tenant's first use; making it is no changelist's cost
    add_rows(1)
    with schema_context(tenant_a.schema_name):
        assert Chat.objects.filter(status="waiting").count() == 1
    few = _query_counts(admin_client)
    add_rows(29)
    with schema_context(tenant_a.schema_name):
        assert Chat.objects.filter(status="assigned").count() == 30
    many = _query_counts(admin_client)

    assert many == few


def test_chats_are_searched_by_customer_id_and_message_text(tenant_a, admin_client, application_a, chats):  # noqa: F811
    numbers = chats(tenant_a, application_a, 3, customer_prefix="cust")
    with schema_context(tenant_a.schema_name):
        conversation_services.message_create(application=application_a, chat_number=numbers[1], body="My parcel is late")
        conversation_services.creations_persist(batch_size=1000)

    by_text = admin_client.get("/admin/conversations/chat/?q=parcel")
    by_customer = admin_client.get("/admin/conversations/chat/?q=cust-2")

    assert [chat.number for chat in by_text.context["cl"].result_list] == [numbers[1]]
    assert [chat.number for chat in by_customer.context["cl"].result_list] == [numbers[2]]


@pytest.mark.parametrize("changelist", ["/admin/conversations/chat/", "/admin/agents/queuedchat/"])
def test_assign_to_agent_asks_for_an_online_agent_with_room_then_assigns(
    tenant_a, admin_client, application_a, make_agent, chats, runs, changelist  # noqa: F811
):
    full = make_agent(max_customers=1, is_online=True, email=f"full-{uuid.uuid4().hex[:6]}@example.test")
    offline = make_agent(max_customers=3, is_online=False, email=f"off-{uuid.uuid4().hex[:6]}@example.test")
    free = make_agent(max_customers=3, is_online=True, email=f"free-{uuid.uuid4().hex[:6]}@example.test")
    chats(tenant_a, application_a, 3)
    with schema_context(tenant_a.schema_name):
        first = Chat.objects.get(number=1)
        from agents.services import chat_assign

        chat_assign(chat=first, agent=full)
        waiting = list(Chat.objects.filter(status="waiting").order_by("number").values_list("pk", flat=True))

    page = admin_client.post(changelist, {"action": "assign_chats", "_selected_action": waiting})

    assert page.status_code == 200
    offered = list(page.context["form"].fields["agent"].queryset)
    assert offered == [free]  # not the full one, not the offline one
    assert offline not in offered

    done = admin_client.post(
        changelist, {"action": "assign_chats", "_selected_action": waiting, "apply": "Assign", "agent": free.pk}
    )

    assert done.status_code == 302
    with schema_context(tenant_a.schema_name):
        assert set(Chat.objects.filter(pk__in=waiting).values_list("status", "assigned_agent_id")) == {("assigned", free.pk)}

    resolved = admin_client.post("/admin/conversations/chat/", {"action": "resolve_chats", "_selected_action": waiting})
    assert resolved.status_code == 302
    with schema_context(tenant_a.schema_name):
        assert set(Chat.objects.filter(pk__in=waiting).values_list("status", flat=True)) == {"resolved"}


def test_the_chat_form_cannot_change_status_or_agent_behind_the_services(
    tenant_a, admin_client, application_a, make_agent, chats, runs  # noqa: F811
):
    # given a chat assigned to an agent with room for one
    agent = make_agent(max_customers=1, is_online=True, email=f"one-{uuid.uuid4().hex[:6]}@example.test")
    other = make_agent(max_customers=1, is_online=True, email=f"two-{uuid.uuid4().hex[:6]}@example.test")
    chats(tenant_a, application_a, 1)
    with schema_context(tenant_a.schema_name):
        from agents.services import chat_assign

        chat = Chat.objects.get(number=1)
        chat_assign(chat=chat, agent=agent)

    # when its change form is posted with another status and another agent
    page = admin_client.get(f"/admin/conversations/chat/{chat.pk}/change/")
    saved = admin_client.post(
        f"/admin/conversations/chat/{chat.pk}/change/",
        {"customer_id": "renamed", "status": "resolved", "assigned_agent": other.pk,
         "messages-TOTAL_FORMS": 0, "messages-INITIAL_FORMS": 0, "messages-MIN_NUM_FORMS": 0, "messages-MAX_NUM_FORMS": 1000},
    )  # fmt: skip

    # then neither is a field of the form, the save keeps both, and the agents' counts are still true
    assert page.status_code == 200
    assert {"status", "assigned_agent"}.isdisjoint(page.context["adminform"].form.fields)
    assert saved.status_code == 302
    with schema_context(tenant_a.schema_name):
        chat.refresh_from_db()
        agent.refresh_from_db()
        other.refresh_from_db()
        assert (chat.customer_id, chat.status, chat.assigned_agent_id) == ("renamed", "assigned", agent.pk)
        assert (agent.active_chats, other.active_chats) == (1, 0)
