"""POST .../chats/{n}/transfer: to an agent or back to a team's queue at the chat's original place, with a
private note; every refusal a 4xx that writes and queues nothing."""

import pytest
from django_tenants.utils import schema_context

from agents.models import Agent, Assignment
from agents.services import assignment_run
from conversations.models import Chat, Message
from conversations.services import creations_persist
from core.tests.support import api_client, make_user, token_for
from events.models import Event
from routing.services import application_team_set, team_create


@pytest.fixture
def routed(tenant_a, application_a, make_agent, chats, runs):
    """Team "Billing" (agents one and two) routes the application; chat 1 is assigned to one, chat 2 waits."""
    one, two = make_agent(max_customers=1), make_agent(max_customers=2, is_online=False)
    outsider = make_agent(max_customers=2)
    with schema_context(tenant_a.schema_name):
        team = team_create(name="Billing", agents=[one, two])
        other_team = team_create(name="Sales", agents=[outsider])
        application_team_set(application=application_a, team=team)
    chats(tenant_a, application_a, 2)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 1
    return {"one": one, "two": two, "outsider": outsider, "team": team, "other_team": other_team}


def _url(application, number: int = 1) -> str:
    return f"/api/applications/{application.token}/chats/{number}/transfer"


def _state(tenant, application):
    """Everything a transfer writes or queues: the chats, the agents' counts, the stints, chat events, notes."""
    with schema_context(tenant.schema_name):
        creations_persist(batch_size=1000)  # queued notes become rows
        return (
            sorted(Chat.objects.filter(application=application).values_list("number", "status", "assigned_agent_id")),
            sorted(Agent.objects.values_list("user_id", "active_chats")),
            Assignment.objects.filter(end_reason=Assignment.EndReason.TRANSFERRED).count(),
            list(Event.objects.filter(type__in=["chat.transferred", "chat.assigned"]).values_list("type", flat=True)),
            list(Message.objects.filter(is_private=True).values_list("body", flat=True)),
        )


def test_the_assigned_agent_transfers_to_a_team_mate_with_a_private_note(tenant_a, application_a, routed):
    one, two = routed["one"], routed["two"]
    with schema_context(tenant_a.schema_name):
        Agent.objects.filter(pk=two.pk).update(is_online=True)
        events_before = Event.objects.count()

    response = one.api.post(_url(application_a), {"agent_id": two.pk, "note": "VIP, refund approved"})

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["assigned_agent"]) == ("assigned", two.pk)
    with schema_context(tenant_a.schema_name):
        assert list(Event.objects.filter(id__gt=0).order_by("id").values_list("type", flat=True))[events_before:] == ["chat.transferred"]
        creations_persist(batch_size=1000)
        note = Message.objects.get(chat__application=application_a, chat__number=1, is_private=True)
        assert (note.body, note.sender, note.author_id) == ("VIP, refund approved", "agent", one.pk)
        assert Event.objects.filter(type="message.created", is_private=True, chat_id=note.chat_id).count() == 1
        assert dict(Agent.objects.filter(pk__in=[one.pk, two.pk]).values_list("user_id", "active_chats")) == {one.pk: 0, two.pk: 1}


def test_a_transfer_back_to_a_team_queue_keeps_the_chats_original_place(tenant_a, application_a, routed, chats, runs):
    one, outsider = routed["one"], routed["outsider"]
    # chat 1 (oldest) is one's; chat 2 waits; chat 3 arrives later
    chats(tenant_a, application_a, 1, customer_prefix="late")
    runs.scheduled = 0

    response = one.api.post(_url(application_a), {"team_id": routed["other_team"].id, "note": "Sales question"})

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["assigned_agent"]) == ("waiting", None)
    assert runs.scheduled == 1
    # back at its place: first in the queue, before chats 2 and 3
    assert [item["number"] for item in one.api.get("/api/queue").json()["data"]] == [1, 2, 3]
    chats_, counts, transferred, events, notes = _state(tenant_a, application_a)
    assert dict(counts)[one.pk] == 0 and transferred == 1 and events == ["chat.assigned", "chat.transferred"] and notes == ["Sales question"]

    # and it is now the other team's: its agent gets it, the Billing chats stay for Billing
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 2
        assert dict(Chat.objects.filter(application=application_a).values_list("number", "assigned_agent_id")) == {
            1: outsider.pk, 2: one.pk, 3: None
        }


def test_an_admin_transfers_a_waiting_chat_to_an_agent(tenant_a, application_a, routed, tenant_a_admin_api):
    response = tenant_a_admin_api.post(_url(application_a, 2), {"agent_id": routed["two"].pk})
    assert response.status_code == 409  # offline: as the assign endpoint answers

    with schema_context(tenant_a.schema_name):
        Agent.objects.filter(pk=routed["two"].pk).update(is_online=True)
    response = tenant_a_admin_api.post(_url(application_a, 2), {"agent_id": routed["two"].pk})
    assert (response.status_code, response.json()["assigned_agent"]) == (200, routed["two"].pk)


@pytest.mark.parametrize(
    "who, number, payload, status",
    [
        ("one", 1, {}, 400),
        ("one", 1, {"agent_id": "two", "team_id": "team"}, 400),
        ("one", 1, {"agent_id": 99999999}, 400),
        ("one", 1, {"agent_id": 10**20}, 400),
        ("one", 1, {"team_id": 10**20}, 400),
        ("one", 1, {"team_id": 99999999}, 400),
        ("one", 1, {"agent_id": "outsider"}, 400),  # not in the chat's team
        ("one", 1, {"agent_id": "two"}, 409),  # offline
        ("one", 1, {"agent_id": "one"}, 409),  # already its agent
        ("one", 1, {"agent_id": "two", "note": 5}, 400),
        ("one", 1, {"agent_id": "two", "colour": "red"}, 400),
        ("one", 1, {"team_id": -1}, 400),
        ("two", 1, {"team_id": "team"}, 403),  # not the chat's agent
        ("one", 2, {"team_id": "team"}, 403),  # a waiting chat: admins only
        ("one", 99, {"team_id": "team"}, 404),
    ],
)
def test_refused_transfers_write_and_queue_nothing(tenant_a, application_a, routed, who, number, payload, status):
    ids = {"one": routed["one"].pk, "two": routed["two"].pk, "outsider": routed["outsider"].pk, "team": routed["team"].id}
    body = {key: ids.get(value, value) if isinstance(value, str) and key != "note" else value for key, value in payload.items()}
    body.setdefault("note", "never written")
    if payload.get("note") == 5:
        body["note"] = 5
    before = _state(tenant_a, application_a)

    response = routed[who].api.post(_url(application_a, number), body, format="json")

    assert response.status_code == status, response.json()
    assert isinstance(response.json(), dict)
    assert _state(tenant_a, application_a) == before


def test_a_resolved_chat_and_another_tenants_token_are_refused(tenant_a, tenant_b, application_a, routed, tenant_a_admin_api):
    assert routed["one"].api.post(f"/api/applications/{application_a.token}/chats/1/resolve").status_code == 200
    assert tenant_a_admin_api.post(_url(application_a), {"team_id": routed["team"].id}).status_code == 409

    stranger = make_user(tenant=tenant_b, role="admin")
    other_tenant = api_client(tenant=tenant_b, token=token_for(stranger, tenant=tenant_b))
    assert other_tenant.post(_url(application_a), {"team_id": routed["team"].id}).status_code == 404
    a_token_on_b = api_client(tenant=tenant_b, token=token_for(routed["one"].user, tenant=tenant_a))
    assert a_token_on_b.post(_url(application_a), {"team_id": routed["team"].id}).status_code == 401


def test_each_transfer_writes_one_audit_entry_by_its_actor(tenant_a, application_a, routed):
    # given the assigned agent, who transfers chat 1 back to a team's queue
    from audit.models import AuditEntry

    one = routed["one"]

    # when it transfers the chat to the other team
    response = one.api.post(_url(application_a), {"team_id": routed["other_team"].id})

    # then one entry says who moved which chat where (an agent-to-agent transfer is chat_assign's own entry)
    assert response.status_code == 200, response.json()
    with schema_context(tenant_a.schema_name):
        entries = list(AuditEntry.objects.filter(action="chat.transferred").values_list("actor_user_id", "changes"))
    assert entries == [(one.pk, {"team": routed["other_team"].id})]
