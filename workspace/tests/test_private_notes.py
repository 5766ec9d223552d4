"""Private notes (issue 25): staff write them on POST .../messages with `"private": true`; the client API (the
application token without a staff token) never sees them, in a list, a detail, a search or an edit; staff do.
`messages_count` counts what the customer sees: notes are not in it, for staff either (docs/workspace.md)."""

import pytest
from django_tenants.utils import schema_context

from conversations import creations
from conversations.models import Chat, Message
from conversations.services import counts_reconcile
from core.models import User
from core.tests.support import api_client, make_user, token_for
from events.models import Event


def _chat_url(application, number: int = 1) -> str:
    return f"/api/applications/{application.token}/chats/{number}"


@pytest.fixture
def noted_chat(tenant_a, application_a, client_a, agent_a, agent_a_api, drain):
    """Chat 1, assigned to agent A: the customer's message (1), the agent's note (2), the agent's reply (3)."""
    client_a.post(f"/api/applications/{application_a.token}/chats", {"customer_id": "c1"})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(number=1).update(assigned_agent=agent_a, status=Chat.Status.ASSIGNED)
    assert client_a.post(f"{_chat_url(application_a)}/messages", {"body": "Where is my parcel?"}).status_code == 202
    note = agent_a_api.post(f"{_chat_url(application_a)}/messages", {"body": "Parcel lost: refund it", "private": True})
    assert note.status_code == 202 and note.json() == {"chat_number": 1, "number": 2}
    assert agent_a_api.post(f"{_chat_url(application_a)}/messages", {"body": "Checking your parcel"}).status_code == 202
    drain(tenant_a)
    return application_a


def _numbers(response) -> list[tuple[int, bool]]:
    assert response.status_code == 200, response.json()
    return [(message["number"], message["private"]) for message in response.json()["data"]]


def test_a_note_is_stored_private_and_its_event_says_so(tenant_a, noted_chat, agent_a):
    with schema_context(tenant_a.schema_name):
        note = Message.objects.get(number=2)
        event = Event.objects.get(type="message.created", data__number=2)

    assert (note.sender, note.author_id, note.is_private, note.body) == ("agent", agent_a.id, True, "Parcel lost: refund it")
    assert event.is_private is True and event.data["private"] is True


def test_the_client_api_never_sees_a_note(tenant_a, noted_chat, client_a):
    url = _chat_url(noted_chat)

    listed = client_a.get(f"{url}/messages")
    detail = client_a.get(f"{url}/messages/2")
    searched = client_a.get(f"{url}/messages/search", {"q": "parcel"})
    put = client_a.put(f"{url}/messages/2", {"body": "rewritten"})
    patch = client_a.patch(f"{url}/messages/2", {"body": "rewritten"})

    assert _numbers(listed) == [(1, False), (3, False)]
    assert (detail.status_code, detail.json()) == (404, {"detail": "No message with this number."})
    assert _numbers(searched) == [(1, False), (3, False)]
    assert (put.status_code, patch.status_code) == (404, 404)
    with schema_context(tenant_a.schema_name):
        assert Message.objects.get(number=2).body == "Parcel lost: refund it"


@pytest.mark.parametrize("role", ["assigned_agent", "other_agent", "admin"])
def test_staff_see_notes_in_list_detail_and_search(tenant_a, noted_chat, agent_a_api, role):
    api = agent_a_api if role == "assigned_agent" else api_client(
        tenant=tenant_a,
        token=token_for(make_user(tenant=tenant_a, role=User.Role.ADMIN if role == "admin" else User.Role.AGENT), tenant=tenant_a),
    )
    url = _chat_url(noted_chat)

    detail = api.get(f"{url}/messages/2")

    assert _numbers(api.get(f"{url}/messages")) == [(1, False), (2, True), (3, False)]
    assert detail.status_code == 200 and detail.json()["private"] is True and detail.json()["attachments"] == []
    assert _numbers(api.get(f"{url}/messages/search", {"q": "PARCEL"})) == [(1, False), (2, True), (3, False)]


def test_the_notes_author_edits_it_and_it_stays_private(tenant_a, noted_chat, agent_a_api):
    response = agent_a_api.patch(f"{_chat_url(noted_chat)}/messages/2", {"body": "Parcel found"})

    assert response.status_code == 200 and (response.json()["body"], response.json()["private"]) == ("Parcel found", True)


def test_messages_count_counts_what_the_customer_sees(tenant_a, noted_chat, client_a, agent_a_api):
    # the note is the second of three messages; the count is 2 for the client and for staff alike
    client_chat = client_a.get(_chat_url(noted_chat)).json()
    staff_chat = agent_a_api.get("/api/chats").json()["data"][0]

    assert client_chat["messages_count"] == 2 and staff_chat["messages_count"] == 2
    # and the periodic recount agrees with the drain (it would "repair" the count to 3 if it counted notes)
    with schema_context(tenant_a.schema_name):
        assert counts_reconcile() == 0
        assert Chat.objects.get().messages_count == 2


def test_a_note_without_a_staff_token_is_403_and_queues_nothing(tenant_a, noted_chat, client_a):
    response = client_a.post(f"{_chat_url(noted_chat)}/messages", {"body": "I am staff, honest", "private": True})

    assert response.status_code == 403
    assert response.json() == {"detail": "Private notes and canned responses need a staff token (an agent's or an admin's)."}
    with schema_context(tenant_a.schema_name):
        assert creations.pending_peek(100) == []


def test_another_agent_may_not_write_a_note_on_the_chat(tenant_a, noted_chat):
    other = api_client(tenant=tenant_a, token=token_for(make_user(tenant=tenant_a, role=User.Role.AGENT), tenant=tenant_a))

    response = other.post(f"{_chat_url(noted_chat)}/messages", {"body": "mine", "private": True})

    assert response.status_code == 403
    with schema_context(tenant_a.schema_name):
        assert creations.pending_peek(100) == []


@pytest.mark.parametrize("private", ["true", 1, None, "yes"])
def test_private_must_be_a_json_boolean(tenant_a, noted_chat, agent_a_api, private):
    response = agent_a_api.post(f"{_chat_url(noted_chat)}/messages", {"body": "x", "private": private})

    assert response.status_code == 400 and "private" in response.json()
    with schema_context(tenant_a.schema_name):
        assert creations.pending_peek(100) == []


def test_another_tenants_staff_token_is_refused(tenant_a, tenant_b, noted_chat):
    foreign = api_client(tenant=tenant_a, token=token_for(make_user(tenant=tenant_b, role=User.Role.ADMIN), tenant=tenant_b))

    assert foreign.get(f"{_chat_url(noted_chat)}/messages").status_code == 401
    assert foreign.post(f"{_chat_url(noted_chat)}/messages", {"body": "x", "private": True}).status_code == 401


def test_a_note_sent_through_the_api_reaches_only_endpoints_that_opt_in(tenant_a, application_a, client_a, agent_a, agent_a_api, drain):
    from events.models import Delivery
    from events.services import webhook_endpoint_create

    with schema_context(tenant_a.schema_name):
        opted_in = webhook_endpoint_create(url="http://127.0.0.1:9/in", events=["message.created"], include_private=True)
        opted_out = webhook_endpoint_create(url="http://127.0.0.1:9/out", events=["message.created"])
    client_a.post(f"/api/applications/{application_a.token}/chats", {"customer_id": "c1"})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(number=1).update(assigned_agent=agent_a, status=Chat.Status.ASSIGNED)
    agent_a_api.post(f"{_chat_url(application_a)}/messages", {"body": "internal", "private": True})
    agent_a_api.post(f"{_chat_url(application_a)}/messages", {"body": "public reply"})
    drain(tenant_a)

    with schema_context(tenant_a.schema_name):
        deliveries = sorted(Delivery.objects.values_list("event__data__number", "endpoint_id"))
    assert deliveries == sorted([(1, opted_in.id), (2, opted_in.id), (2, opted_out.id)])


@pytest.mark.parametrize(
    "raw",
    [
        '{"body": "%s", "private": true}' % ("x" * 10_001),
        '{"body": "a\\u0000b", "private": true}',
        '{"body": "\\udc00", "private": true}',
        '{"body": "", "private": true}',
    ],
)
def test_hostile_note_bodies_are_400_and_queue_nothing(tenant_a, noted_chat, agent_a_api, raw):
    response = agent_a_api.post(f"{_chat_url(noted_chat)}/messages", data=raw, content_type="application/json")

    assert response.status_code == 400 and ("detail" in response.json() or "body" in response.json())
    with schema_context(tenant_a.schema_name):
        assert creations.pending_peek(100) == []
