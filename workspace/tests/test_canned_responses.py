"""Canned responses (issue 25): GET (with ?q=) for staff, POST/PATCH/DELETE for admins, a shortcut unique in
the tenant; POST .../messages {"canned": shortcut} sends the body with {{customer_id}} and {{agent_name}} filled
(other {{...}} left as written) as the agent's message, staff only."""

import pytest
from django_tenants.utils import schema_context

from conversations import creations
from conversations.models import Chat, Message
from core.models import User
from core.tests.support import api_client, token_for
from core.services import user_create
from workspace.models import CannedResponse
from workspace.services import canned_response_create


def _canned(tenant) -> list[tuple[str, str]]:
    with schema_context(tenant.schema_name):
        return list(CannedResponse.objects.order_by("shortcut").values_list("shortcut", "body"))


def _pending_messages(tenant) -> list[dict]:
    with schema_context(tenant.schema_name):
        return [record for record in creations.pending_peek(1000) if record["kind"] == "message"]


# --- the list and its writes ------------------------------------------------------------------------------------


def test_an_admin_writes_canned_responses_and_staff_search_them(tenant_a, tenant_a_admin_api, agent_a_api):
    hello = tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "hello", "body": "Hi {{customer_id}}!"})
    tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "refund", "body": "Your REFUND is on its way."})
    tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "bye", "body": "Goodbye"})

    assert hello.status_code == 201
    assert hello.json() == {"id": hello.json()["id"], "shortcut": "hello", "body": "Hi {{customer_id}}!"}

    def shortcuts(**query):
        response = agent_a_api.get("/api/canned-responses", query)
        assert response.status_code == 200
        return [item["shortcut"] for item in response.json()["data"]]

    assert shortcuts() == ["hello", "refund", "bye"]
    assert shortcuts(q="HEL") == ["hello"]  # the shortcut
    assert shortcuts(q="refund") == ["refund"]  # shortcut and body
    assert shortcuts(q="on its WAY") == ["refund"]  # the body
    assert shortcuts(q="%") == []  # taken literally
    assert shortcuts(q="nothing") == []


def test_an_admin_edits_and_deletes_one(tenant_a, tenant_a_admin_api):
    canned_id = tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "hello", "body": "Hi"}).json()["id"]
    url = f"/api/canned-responses/{canned_id}"

    body_only = tenant_a_admin_api.patch(url, {"body": "Hello there"})
    renamed = tenant_a_admin_api.patch(url, {"shortcut": "hi"})
    deleted = tenant_a_admin_api.delete(url)
    deleted_again = tenant_a_admin_api.delete(url)

    assert body_only.json() == {"id": canned_id, "shortcut": "hello", "body": "Hello there"}
    assert renamed.json() == {"id": canned_id, "shortcut": "hi", "body": "Hello there"}
    assert deleted.status_code == 204
    assert (deleted_again.status_code, deleted_again.json()) == (404, {"detail": "No canned response with this id."})
    assert _canned(tenant_a) == []


def test_a_shortcut_is_unique_in_the_tenant(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "hello", "body": "Hi"})
    other_id = tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "bye", "body": "Bye"}).json()["id"]

    again = tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "hello", "body": "Hi again"})
    renamed = tenant_a_admin_api.patch(f"/api/canned-responses/{other_id}", {"shortcut": "hello"})
    in_b = tenant_b_admin_api.post("/api/canned-responses", {"shortcut": "hello", "body": "B's own"})

    assert (again.status_code, again.json()) == (409, {"detail": "A canned response with this shortcut exists already."})
    assert renamed.status_code == 409
    assert _canned(tenant_a) == [("bye", "Bye"), ("hello", "Hi")]
    assert in_b.status_code == 201 and tenant_b_admin_api.get("/api/canned-responses").json()["data"][0]["body"] == "B's own"


def test_agents_read_but_do_not_write(tenant_a, tenant_a_admin_api, agent_a_api):
    canned_id = tenant_a_admin_api.post("/api/canned-responses", {"shortcut": "hello", "body": "Hi"}).json()["id"]

    assert agent_a_api.post("/api/canned-responses", {"shortcut": "mine", "body": "x"}).status_code == 403
    assert agent_a_api.patch(f"/api/canned-responses/{canned_id}", {"body": "x"}).status_code == 403
    assert agent_a_api.delete(f"/api/canned-responses/{canned_id}").status_code == 403
    assert _canned(tenant_a) == [("hello", "Hi")]


def test_another_tenants_id_is_404(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    foreign_id = tenant_b_admin_api.post("/api/canned-responses", {"shortcut": "b", "body": "B"}).json()["id"]
    with schema_context(tenant_a.schema_name):
        taken = set(CannedResponse.objects.values_list("id", flat=True))
    missing = max(taken | {foreign_id}) + 1000

    assert tenant_a_admin_api.patch(f"/api/canned-responses/{missing}", {"body": "x"}).status_code == 404
    assert tenant_a_admin_api.delete(f"/api/canned-responses/{missing}").status_code == 404
    assert tenant_a_admin_api.get("/api/canned-responses").json()["data"] == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"shortcut": "", "body": "x"}, "shortcut"),
        ({"shortcut": "has space", "body": "x"}, "shortcut"),
        ({"shortcut": "/hello", "body": "x"}, "shortcut"),
        ({"shortcut": "a" * 65, "body": "x"}, "shortcut"),
        ({"shortcut": "ok", "body": ""}, "body"),
        ({"shortcut": "ok", "body": "x" * 10_001}, "body"),
        ({"shortcut": "ok", "body": 5}, "body"),
        ({"shortcut": "ok", "body": "x", "extra": 1}, "extra"),
        ({"body": "x"}, "shortcut"),
    ],
)
def test_bad_input_is_400_and_writes_nothing(tenant_a, tenant_a_admin_api, body, field):
    response = tenant_a_admin_api.post("/api/canned-responses", body)

    assert response.status_code == 400 and field in response.json()
    assert _canned(tenant_a) == []


def test_a_nul_in_a_canned_body_is_400(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.post(
        "/api/canned-responses", data='{"shortcut": "x", "body": "a\\u0000b"}', content_type="application/json"
    )

    assert response.status_code == 400
    assert _canned(tenant_a) == []


# --- sending one --------------------------------------------------------------------------------------------------


@pytest.fixture
def chat(tenant_a, application_a, client_a, drain):
    """Chat 1 of customer "c-42", assigned to agent "Dewi"; canned responses "hello" and "long"."""
    with schema_context(tenant_a.schema_name):
        agent = user_create(email="dewi@example.test", password="Dewi-pass-1234", role=User.Role.AGENT, name="Dewi")
        canned_response_create(shortcut="hello", body="Hi {{customer_id}}, {{ agent_name }} here. {{order_id}} {x}")
        canned_response_create(shortcut="long", body="{{customer_id}}" * 50)
    client_a.post(f"/api/applications/{application_a.token}/chats", {"customer_id": "c-42"})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(number=1).update(assigned_agent=agent, status=Chat.Status.ASSIGNED)
    return {"url": f"/api/applications/{application_a.token}/chats/1", "api": api_client(tenant=tenant_a, token=token_for(agent, tenant=tenant_a))}


def test_a_canned_response_is_sent_filled_in_as_the_agents_message(tenant_a, chat, drain):
    response = chat["api"].post(f"{chat['url']}/messages", {"canned": "hello"})
    note = chat["api"].post(f"{chat['url']}/messages", {"canned": "hello", "private": True})
    drain(tenant_a)

    assert (response.status_code, response.json()) == (202, {"chat_number": 1, "number": 1})
    assert note.status_code == 202
    with schema_context(tenant_a.schema_name):
        messages = list(Message.objects.order_by("number").values_list("body", "sender", "is_private"))
    filled = "Hi c-42, Dewi here. {{order_id}} {x}"  # unknown placeholders are sent as written
    assert messages == [(filled, "agent", False), (filled, "agent", True)]


@pytest.mark.parametrize(
    "body, error",
    [
        ({"canned": "hello", "body": "and a body"}, {"body": ["Send either body or canned (a canned response's shortcut), not both."]}),
        ({"private": True}, {"body": ["Send either body or canned (a canned response's shortcut), not both."]}),
        ({"canned": "nope"}, {"canned": ["No canned response has this shortcut."]}),
        ({"canned": ""}, {"canned": ["This field may not be blank."]}),
        ({"canned": 7}, {"canned": ["Not a valid string."]}),
    ],
)
def test_bad_canned_sends_are_400_and_queue_nothing(tenant_a, chat, body, error):
    response = chat["api"].post(f"{chat['url']}/messages", body)

    assert (response.status_code, response.json()) == (400, error)
    assert _pending_messages(tenant_a) == []


def test_a_response_too_long_once_filled_is_400(tenant_a, chat, settings):
    # pytest-django's `settings` restores the value afterwards
    settings.MESSAGE_MAX_LENGTH = 200  # "c-42" x 50 = 200 characters: at the limit
    assert chat["api"].post(f"{chat['url']}/messages", {"canned": "long"}).status_code == 202
    settings.MESSAGE_MAX_LENGTH = 199

    response = chat["api"].post(f"{chat['url']}/messages", {"canned": "long"})

    assert (response.status_code, response.json()) == (
        400, {"canned": ["Filled in, the response is longer than 199 characters."]}
    )  # fmt: skip
    assert len(_pending_messages(tenant_a)) == 1


def test_the_client_may_not_send_a_canned_response(tenant_a, chat, client_a):
    response = client_a.post(f"{chat['url']}/messages", {"canned": "hello"})

    assert response.status_code == 403
    assert _pending_messages(tenant_a) == []
