"""The Qiscus adapter: its two webhooks with Qiscus' documented sample payloads, and the outbound
assign_agent call, made to a local HTTP server."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from django.test import override_settings
from django_tenants.utils import schema_context

from agents.models import Agent, AllocationSettings
from agents.services import allocation_settings_get, assignment_run
from core.tests.support import api_client, PASSWORD, wait_for
from conversations.models import Chat
from conversations.services import creations_persist
from sociomile.celery import app as celery_app

ALLOCATION_URL = "/api/integrations/qiscus/agent-allocation"
RESOLVED_URL = "/api/integrations/qiscus/mark-as-resolved"
QISCUS_AGENT_EMAIL = "dewi@mail.com"


def custom_agent_allocation_payload(room_id: str = "1905692") -> dict:
    """Qiscus Omnichannel's Custom Agent Allocation webhook, as its documentation shows it."""
    return {
        "app_id": "oni-bgo2lummmhvzqxbt5",
        "source": "qiscus",
        "name": "sudah",
        "email": "sudah@gmail.com",
        "avatar_url": "https://d1edrlpyc25xu0.cloudfront.net/kiwari-prod/image/upload/wMWsDZP6ta/1516689726-ic_qiscus_client.png",
        "extras": '{"timezone_offset":7}',
        "is_resolved": True,
        "latest_service": {
            "id": 244,
            "user_id": 1,
            "room_log_id": 53,
            "app_id": 1,
            "room_id": room_id,
            "notes": None,
            "resolved_at": "2019-02-04 04:49:47",
            "is_resolved": True,
            "created_at": "2019-02-04 04:49:47",
            "updated_at": "2019-02-04 04:49:47",
            "first_comment_id": "15167003",
            "last_comment_id": "15167015",
            "retrieved_at": "2019-02-04 04:49:47",
            "first_comment_timestamp": None,
        },
        "room_id": room_id,
        "candidate_agent": {
            "id": 22,
            "name": "dewi",
            "email": QISCUS_AGENT_EMAIL,
            "authentication_token": "NlASwSIUnAqoTcFjYNBR",
            "created_at": "2019-01-17 06:50:20",
            "updated_at": "2019-02-04 04:49:47",
            "sdk_email": "qbe2s-dewi_mail.com",
            "sdk_key": "qbe2s-abcdef",
            "is_available": True,
            "type": 2,
            "avatar_url": "https://d1edrlpyc25xu0.cloudfront.net/kiwari-prod/image/upload/75r6s_jOHa/1507541871-avatar-mine.png",
            "app_id": 1,
            "is_verified": False,
            "notifications_room_id": "1905683",
            "bubble_color": None,
            "qismo_key": "qbe2s",
            "direct_login_token": None,
            "last_login": "2019-02-04 04:40:12",
            "force_offline": False,
            "deleted_at": None,
            "type_as_string": "agent",
            "assigned_rooms": 1,
        },
    }


def mark_as_resolved_payload(room_id: str = "1905692") -> dict:
    """Qiscus Omnichannel's Mark As Resolved webhook, as its documentation shows it."""
    return {
        "customer": {
            "additional_info": [],
            "avatar": "https://d1edrlpyc25xu0.cloudfront.net/kiwari-prod/image/upload/wMWsDZP6ta/1516689726-ic_qiscus_client.png",
            "name": "sudah",
            "user_id": "sudah@gmail.com",
        },
        "resolved_by": {"email": QISCUS_AGENT_EMAIL, "id": 22, "is_available": True, "name": "dewi", "type": "agent"},
        "service": {
            "first_comment_id": "15167003",
            "id": 244,
            "is_resolved": True,
            "last_comment_id": "15167015",
            "notes": None,
            "room_id": room_id,
            "source": "qiscus",
        },
    }


@pytest.fixture
def integration(tenant_a, monkeypatch):
    """A client of tenant A's host carrying the tenant's integration key, drains done in-process."""
    from conversations import services

    monkeypatch.setattr(services, "_drain_schedule", lambda: None)
    with schema_context(tenant_a.schema_name):
        key = allocation_settings_get().qiscus_integration_key
    client = api_client(tenant=tenant_a)
    client.credentials(HTTP_X_SOCIOMILE_INTEGRATION_KEY=key)
    return client


class FakeQiscus:
    """A local HTTP server standing in for Qiscus: records requests, answers the queued statuses."""

    def __init__(self, statuses: list[int]):
        self.requests: list[dict] = []
        self.statuses = statuses
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "form": parse_qs(body)})
                status = fake.statuses.pop(0) if fake.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"data": {}}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_qiscus():
    servers = []

    def start(statuses=()):
        server = FakeQiscus(list(statuses))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_the_integration_settings_for_an_admin(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.get("/api/integrations/qiscus")

    assert response.status_code == 200
    with schema_context(tenant_a.schema_name):
        key = AllocationSettings.objects.get().qiscus_integration_key
    host = f"http://{tenant_a.schema_name}.localhost"
    assert response.json() == {
        "integration_key": key,
        "agent_allocation_url": f"{host}{ALLOCATION_URL}",
        "mark_as_resolved_url": f"{host}{RESOLVED_URL}",
    }
    assert len(key) >= 40


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_webhooks_without_the_right_key_are_401_and_write_nothing(tenant_a, key):
    client = api_client(tenant=tenant_a)
    if key is not None:
        client.credentials(HTTP_X_SOCIOMILE_INTEGRATION_KEY=key)

    allocation = client.post(ALLOCATION_URL, custom_agent_allocation_payload())
    resolved = client.post(RESOLVED_URL, mark_as_resolved_payload())

    assert (allocation.status_code, resolved.status_code) == (401, 401)
    with schema_context(tenant_a.schema_name):
        assert AllocationSettings.objects.get().qiscus_application_id is None
        assert Chat.objects.count() == 0


def test_a_room_becomes_one_waiting_chat_however_often_qiscus_asks(tenant_a, integration):
    first = integration.post(ALLOCATION_URL, custom_agent_allocation_payload())
    repeated_while_queued = integration.post(ALLOCATION_URL, custom_agent_allocation_payload())

    assert first.status_code == 202
    with schema_context(tenant_a.schema_name):
        application = AllocationSettings.objects.get().qiscus_application
    assert first.json() == {"room_id": "1905692", "application": application.token, "chat_number": 1}
    assert (repeated_while_queued.status_code, repeated_while_queued.json()) == (200, first.json())

    with schema_context(tenant_a.schema_name):
        creations_persist(batch_size=100)
        assert list(Chat.objects.values_list("application__name", "number", "status", "customer_id")) == [
            ("Qiscus", 1, "waiting", "1905692")
        ]
    repeated_once_persisted = integration.post(ALLOCATION_URL, custom_agent_allocation_payload())
    assert (repeated_once_persisted.status_code, repeated_once_persisted.json()["chat_number"]) == (200, 1)
    other_room = integration.post(ALLOCATION_URL, custom_agent_allocation_payload(room_id="777"))
    assert (other_room.status_code, other_room.json()["chat_number"]) == (202, 2)


def test_bad_payloads_are_400(integration):
    assert integration.post(ALLOCATION_URL, {"app_id": "x"}).status_code == 400
    assert integration.post(RESOLVED_URL, {"service": {"id": 1}}).status_code == 400
    assert integration.post(RESOLVED_URL, {"resolved_by": {}}).status_code == 400
    with override_settings(QISCUS_APP_ID="another-app"):
        assert integration.post(ALLOCATION_URL, custom_agent_allocation_payload()).json() == {
            "app_id": ["Not this tenant's Qiscus app."]
        }


def test_an_agent_id_too_long_to_remember_is_ignored_and_the_webhooks_still_work(tenant_a, tenant_a_admin_api, integration):
    # given an agent whose email is the Qiscus agent's, and payloads whose agent id does not fit the column
    agent_id = tenant_a_admin_api.post(
        "/api/agents", {"email": QISCUS_AGENT_EMAIL, "password": PASSWORD, "max_customers": 1, "is_online": False}
    ).json()["id"]
    allocation = custom_agent_allocation_payload()
    allocation["candidate_agent"]["id"] = "9" * 65
    resolved = mark_as_resolved_payload()
    resolved["resolved_by"]["id"] = "9" * 65

    # when Qiscus asks for an agent, the chat is persisted, and Qiscus marks the room resolved
    allocated = integration.post(ALLOCATION_URL, allocation)
    with schema_context(tenant_a.schema_name):
        creations_persist(batch_size=100)
    resolved_answer = integration.post(RESOLVED_URL, resolved)

    # then both are served, the chat is resolved, and no id was learnt
    assert (allocated.status_code, resolved_answer.status_code) == (202, 200)
    with schema_context(tenant_a.schema_name):
        assert list(Chat.objects.values_list("customer_id", "status")) == [("1905692", "resolved")]
        assert Agent.objects.get(pk=agent_id).qiscus_agent_id == ""


def test_allocation_assignment_in_qiscus_and_mark_as_resolved(
    tenant_a, tenant_a_admin_api, integration, fake_qiscus, monkeypatch, django_capture_on_commit_callbacks
):
    # given an online agent whose email is the Qiscus agent's, and Qiscus (a local server) answering
    # 503 once, then 200
    qiscus = fake_qiscus(statuses=[503])
    agent_id = tenant_a_admin_api.post(
        "/api/agents", {"email": QISCUS_AGENT_EMAIL, "password": PASSWORD, "max_customers": 1, "is_online": True}
    ).json()["id"]
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)  # the outbound task runs here

    # when Qiscus asks for an agent for the room, and the chat is persisted and assigned
    assert integration.post(ALLOCATION_URL, custom_agent_allocation_payload()).status_code == 202
    with (
        override_settings(QISCUS_BASE_URL=qiscus.url, QISCUS_APP_ID="oni-bgo2lummmhvzqxbt5", QISCUS_SECRET_KEY="secret"),
        schema_context(tenant_a.schema_name),
    ):
        creations_persist(batch_size=100)
        assert Agent.objects.get(pk=agent_id).qiscus_agent_id == "22"  # learnt from candidate_agent
        with django_capture_on_commit_callbacks(execute=True):
            assert assignment_run() == 1

    # then the chat is assigned here, and in Qiscus: the 503 was retried, the retry succeeded
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
    assert (chat.status, chat.assigned_agent_id, chat.customer_id) == ("assigned", agent_id, "1905692")
    assert [request["path"] for request in qiscus.requests] == ["/api/v1/admin/service/assign_agent"] * 2
    request = qiscus.requests[-1]
    assert request["form"] == {"room_id": ["1905692"], "agent_id": ["22"]}
    assert (request["headers"]["Qiscus-App-Id"], request["headers"]["Qiscus-Secret-Key"]) == (
        "oni-bgo2lummmhvzqxbt5",
        "secret",
    )
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"

    # when Qiscus reports the room resolved (twice, as webhooks may be delivered)
    resolved = integration.post(RESOLVED_URL, mark_as_resolved_payload())
    again = integration.post(RESOLVED_URL, mark_as_resolved_payload())

    # then the chat is resolved and the agent's capacity is free again
    assert resolved.status_code == 200
    assert (resolved.json()["number"], resolved.json()["status"], resolved.json()["assigned_agent"]) == (
        1,
        "resolved",
        agent_id,
    )
    assert (again.status_code, again.json()["resolved_at"]) == (200, resolved.json()["resolved_at"])
    assert tenant_a_admin_api.get(f"/api/agents/{agent_id}").json()["active_chats"] == 0
    unknown = integration.post(RESOLVED_URL, mark_as_resolved_payload(room_id="no-such-room"))
    assert unknown.status_code == 404


def test_no_qiscus_call_without_configuration_or_for_other_applications(
    tenant_a, make_agent, chats, application_a, fake_qiscus, monkeypatch
):
    from integrations.qiscus import tasks

    sent = []
    monkeypatch.setattr(tasks.qiscus_assign_agent_task, "delay", lambda *args: sent.append(args))
    make_agent(max_customers=5)
    chats(tenant_a, application_a, 2)
    qiscus = fake_qiscus()
    with (
        override_settings(QISCUS_BASE_URL=qiscus.url, QISCUS_APP_ID="a", QISCUS_SECRET_KEY="s"),
        schema_context(tenant_a.schema_name),
    ):
        assert assignment_run() == 2
    assert sent == [] and qiscus.requests == []


# --- mark-as-resolved right after the allocation, while the room's chat is still queued -----------------------


def test_a_room_resolved_before_its_chat_is_persisted_ends_resolved(tenant_a, integration, monkeypatch):
    from integrations.qiscus import services as qiscus_services
    from integrations.qiscus.services import qiscus_queued_chat_resolve

    # given the room's chat allocated, not yet persisted, and no drain within the wait
    monkeypatch.setattr(qiscus_services, "QISCUS_RESOLVE_WAIT_SECONDS", 0.1)
    scheduled = []
    monkeypatch.setattr(qiscus_services, "qiscus_room_resolve_schedule", lambda **kwargs: scheduled.append(kwargs))
    assert integration.post(ALLOCATION_URL, custom_agent_allocation_payload()).status_code == 202

    # when Qiscus marks the room resolved at once
    early = integration.post(RESOLVED_URL, mark_as_resolved_payload())

    # then it is told to come back, and the resolve is handed to a task
    assert early.status_code == 409
    assert early["Retry-After"] == "1"
    assert scheduled == [{"room_id": "1905692", "chat_number": 1}]
    with schema_context(tenant_a.schema_name):
        with pytest.raises(qiscus_services.QiscusChatNotPersisted):  # the task retries until the row exists
            qiscus_queued_chat_resolve(room_id="1905692", chat_number=1)
        # once the drain has persisted the chat (waiting), the task resolves it; a second run changes nothing
        creations_persist(batch_size=100)
        assert Chat.objects.get(number=1).status == "waiting"
        assert qiscus_queued_chat_resolve(room_id="1905692", chat_number=1).status == "resolved"
        assert qiscus_queued_chat_resolve(room_id="1905692", chat_number=1).status == "resolved"
    # and Qiscus' repeat finds it resolved
    repeated = integration.post(RESOLVED_URL, mark_as_resolved_payload())
    assert (repeated.status_code, repeated.json()["status"]) == (200, "resolved")


@pytest.mark.worker
def test_rooms_resolved_right_after_their_allocation_end_resolved_through_a_real_worker(celery_worker, make_live_tenant):
    # given an online agent with room for every chat, and a real worker draining and assigning
    from agents.services import agent_create

    tenant = make_live_tenant("qiscus-resolve")
    with schema_context(tenant.schema_name):
        key = allocation_settings_get().qiscus_integration_key
        agent = agent_create(email="qiscus-live@example.test", password=PASSWORD, max_customers=20, is_online=True)
    client = api_client(tenant=tenant)
    client.credentials(HTTP_X_SOCIOMILE_INTEGRATION_KEY=key)

    # when ten rooms are each allocated and marked resolved at once (as Qiscus does for a quick conversation)
    answers = []
    for index in range(10):
        room = f"room-{index}"
        assert client.post(ALLOCATION_URL, custom_agent_allocation_payload(room_id=room)).status_code == 202
        answers.append(client.post(RESOLVED_URL, mark_as_resolved_payload(room_id=room)).status_code)

    # then each was resolved at once (200) or told to come back (409), never "no chat" (404)
    assert set(answers) <= {200, 409}, answers

    # and every chat ends resolved, holding no agent's slot
    def settled():
        with schema_context(tenant.schema_name):
            statuses = list(Chat.objects.order_by("number").values_list("status", flat=True))
            active = Agent.objects.get(pk=agent.pk).active_chats
        return statuses == ["resolved"] * 10 and active == 0

    wait_for(settled, timeout=60, message="every room's chat resolved and the agent's slots free")
