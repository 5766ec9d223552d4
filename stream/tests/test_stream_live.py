"""The stream end to end: the real ASGI process (uvicorn, as bin/dev runs it) on the test database and Redis,
read by a real browser's EventSource (Playwright driving Debian's Chromium, as core/tests/test_admin_browser.py
does) and by a plain HTTP client. Committed data (`make_live_tenant`): the server is another process."""

import json
import threading

import pytest
import requests
from django.conf import settings
from django_tenants.utils import schema_context

from agents.services import agent_create, agent_set_online, chat_assign
from conversations import services as conversation_services
from conversations.models import Chat
from conversations.services import application_create, chat_create, message_create
from core.models import User
from core.tests.support import PASSWORD, api_client, make_user, token_for, wait_for
from core.tests.test_admin_browser import browser  # noqa: F401  (the fixture: Chromium under Playwright)
from events.models import Event
from events.services import EVENT_TYPES



class World:
    """A committed tenant with an application, two agents and an admin, and helpers that make events. The agents
    are offline but while a chat is given to one: the engine then assigns nothing the test did not ask for."""

    def __init__(self, tenant):
        self.tenant = tenant
        with schema_context(tenant.schema_name):
            self.application = application_create(name="Stream")
            self.mine = agent_create(email=f"mine@{tenant.schema_name}.test", password=PASSWORD, max_customers=10, is_online=False)
            self.theirs = agent_create(email=f"theirs@{tenant.schema_name}.test", password=PASSWORD, max_customers=10, is_online=False)
        self.admin = make_user(tenant=tenant, role=User.Role.ADMIN)

    def ticket(self, user) -> str:
        response = api_client(tenant=self.tenant, token=token_for(user, tenant=self.tenant)).post("/api/stream/ticket")
        assert response.status_code == 201, response.content
        return response.json()["ticket"]

    def drain(self) -> None:
        with schema_context(self.tenant.schema_name):
            conversation_services.creations_persist(batch_size=1000)

    def chat(self, customer_id: str, agent=None) -> Chat:
        with schema_context(self.tenant.schema_name):
            number = chat_create(application=self.application, customer_id=customer_id)
            self.drain()
            chat = Chat.objects.get(application=self.application, number=number)
            if agent is not None:
                agent = agent_set_online(agent=agent, is_online=True)
                chat = chat_assign(chat=chat, agent=agent)
                agent_set_online(agent=agent, is_online=False)
            return chat

    def message(self, chat: Chat, body: str, *, agent=None, is_private: bool = False) -> None:
        with schema_context(self.tenant.schema_name):
            message_create(application=self.application, chat_number=chat.number, body=body,
                           sender="agent" if agent else "customer", author=agent.user if agent else None,
                           is_private=is_private)  # fmt: skip
            self.drain()

    def events(self) -> list[Event]:
        with schema_context(self.tenant.schema_name):
            return list(Event.objects.order_by("id"))


@pytest.fixture
def world(make_live_tenant, monkeypatch):
    # The test drains in this process (no worker needed to persist the rows the server then reads).
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)
    return World(make_live_tenant("stream"))


def _summary(event: dict) -> tuple:
    """(type, chat number, body) of a received event (an SSE frame or a browser's MessageEvent)."""
    envelope = event["data"]
    data = envelope["data"]
    return envelope["type"], data.get("chat_number", data.get("number")), data.get("body")


class SseReader:
    """Reads a stream with a plain HTTP client in a thread; keeps every frame (comments too)."""

    def __init__(self, url: str, *, host: str, headers: dict | None = None):
        self.response = requests.get(url, headers={"Host": host, **(headers or {})}, stream=True, timeout=30)
        self.frames: list[dict] = []
        self.comments: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        if self.response.status_code == 200:
            self.thread.start()

    def _read(self) -> None:
        frame: dict = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line == "":
                    if frame:
                        self.frames.append({**frame, "data": json.loads(frame["data"])})
                    frame = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    field, _, value = line.partition(": ")
                    frame[field] = value
        except Exception:
            pass  # closed by the test

    def close(self) -> None:
        self.response.close()


def test_ticket_errors_are_clear_json_and_a_stream_sends_keep_alives(stream_server, world, make_live_tenant):
    url, host = f"http://127.0.0.1:{stream_server.port}/api/stream", f"{world.tenant.schema_name}.{settings.BASE_DOMAIN}"

    def get(query: str, headers: dict | None = None) -> requests.Response:
        return requests.get(f"{url}{query}", headers={"Host": host, **(headers or {})}, timeout=10)

    # no ticket, an unknown one
    for query in ("", "?ticket=", "?ticket=forged"):
        response = get(query)
        assert (response.status_code, response.headers["Content-Type"]) == (401, "application/json"), query
        assert "ticket" in response.json()["detail"]
    # another tenant's ticket is refused on this tenant's host
    other = World(make_live_tenant("other"))
    assert get(f"?ticket={other.ticket(other.admin)}").status_code == 401
    # a forged, malformed or other tenant's Last-Event-ID is a 400
    other.chat("c-other")
    for last in ("evt_not-a-uuid", "evt_00000000-0000-0000-0000-000000000000", other.events()[0].webhook_id, "42"):
        response = get(f"?ticket={world.ticket(world.admin)}", {"Last-Event-ID": last})
        assert response.status_code == 400, last
        assert "Last-Event-ID" in response.json()["detail"]
    # an unknown host is the usual 404
    assert requests.get(url, headers={"Host": f"nope.{settings.BASE_DOMAIN}"}, timeout=10).status_code == 404

    # a good ticket opens a stream once, with keep-alive comments while nothing happens
    ticket = world.ticket(world.mine.user)
    reader = SseReader(f"{url}?ticket={ticket}", host=host)
    try:
        assert reader.response.status_code == 200
        assert reader.response.headers["Content-Type"] == "text/event-stream"
        assert reader.response.headers["Cache-Control"] == "no-cache"
        wait_for(lambda: ": keep-alive" in reader.comments, timeout=10, message="a keep-alive comment")
        assert get(f"?ticket={ticket}").status_code == 401  # used
    finally:
        reader.close()

    # a user deactivated after getting a ticket is refused
    ticket = world.ticket(world.theirs.user)
    with schema_context(world.tenant.schema_name):
        User.objects.filter(pk=world.theirs.pk).update(is_active=False)
    assert get(f"?ticket={ticket}").status_code == 403


def test_the_wsgi_side_does_not_serve_the_endless_response(tenant_a):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    response = api_client(tenant=tenant_a, token=token_for(admin, tenant=tenant_a)).get("/api/stream?ticket=x")
    assert response.status_code == 404
    assert "ASGI" in response.json()["detail"]


def test_last_event_id_header_replays_exactly_what_was_missed_then_goes_live(stream_server, world):
    host = f"{world.tenant.schema_name}.{settings.BASE_DOMAIN}"
    url = f"http://127.0.0.1:{stream_server.port}/api/stream"
    # given an admin's stream that saw the first chat's events, then was cut
    reader = SseReader(f"{url}?ticket={world.ticket(world.admin)}", host=host)
    first = world.chat("c-1", agent=world.mine)
    wait_for(lambda: len(reader.frames) == 2, timeout=15, message="the first chat's two events")
    reader.close()
    seen = reader.frames[-1]["id"]

    # when more happens while it is away, and it reconnects with Last-Event-ID while events keep coming
    world.message(first, "missed 1")
    world.chat("c-2")
    world.message(first, "missed 2")
    reader = SseReader(f"{url}?ticket={world.ticket(world.admin)}", host=host, headers={"Last-Event-ID": seen})
    try:
        world.message(first, "live 1")
        wait_for(lambda: len(reader.frames) >= 4, timeout=15, message="the replay and the live event")
        wait_for(lambda: ": keep-alive" in reader.comments, timeout=10, message="a keep-alive after them")  # a duplicate would be in
        # then every event after the last one seen, once each, in order: nothing lost, nothing twice
        expected = [event.webhook_id for event in world.events()]
        expected = expected[expected.index(seen) + 1:]
        assert [frame["id"] for frame in reader.frames] == expected
        assert [(frame["event"], frame["data"]["type"], frame["data"]["id"]) for frame in reader.frames] == [
            (frame["event"], frame["event"], frame["id"]) for frame in reader.frames
        ]
        assert [_summary(frame) for frame in reader.frames] == [
            ("message.created", 1, "missed 1"), ("chat.created", 2, None), ("message.created", 1, "missed 2"),
            ("message.created", 1, "live 1"),
        ]
    finally:
        reader.close()


_LISTEN = """([url, types]) => {
    window.received = [];
    window.source = new EventSource(url);
    for (const type of types) {
        window.source.addEventListener(type, (e) => window.received.push({id: e.lastEventId, type: e.type, data: JSON.parse(e.data)}));
    }
}"""


def _received(page) -> list[dict]:
    return page.evaluate("window.received")


@pytest.mark.browser
def test_a_browser_eventsource_receives_its_chats_and_resumes_without_a_gap(stream_server, world, make_live_tenant, browser):  # noqa: F811
    other = World(make_live_tenant("elsewhere"))
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        # given an agent's EventSource in Chromium, on its tenant's host (same origin as the page)
        page.goto(f"{stream_server.url(world.tenant)}/health")
        page.evaluate(_LISTEN, [f"/api/stream?ticket={world.ticket(world.mine.user)}", list(EVENT_TYPES)])
        page.wait_for_function("window.source.readyState === 1")

        # when a chat is assigned to it and messages come, another agent's chat gets a private note, a waiting
        # chat arrives, and another tenant has events of its own
        mine = world.chat("c-mine", agent=world.mine)
        world.message(mine, "hello")
        world.message(mine, "my own note", agent=world.mine, is_private=True)
        theirs = world.chat("c-theirs", agent=world.theirs)
        world.message(theirs, "not for me")
        world.message(theirs, "their private note", agent=world.theirs, is_private=True)
        world.chat("c-waiting")
        other.chat("c-elsewhere", agent=other.mine)
        world.message(mine, "last")

        # then it receives its chat and messages, the queue's events of any chat, and nothing else
        expected = [
            ("chat.created", 1, None), ("chat.assigned", 1, None), ("message.created", 1, "hello"),
            ("message.created", 1, "my own note"), ("chat.created", 2, None), ("chat.assigned", 2, None),
            ("chat.created", 3, None), ("message.created", 1, "last"),
        ]
        page.wait_for_function(f"window.received.length >= {len(expected)}")
        received = _received(page)
        assert [_summary(event) for event in received] == expected
        assert all(event["data"]["data"]["application"] == world.application.token for event in received)
        assert [event["id"] for event in received] == [event["data"]["id"] for event in received]

        # when the connection drops, events happen meanwhile, and a new EventSource resumes from the last id
        page.evaluate("window.source.close()")
        last_seen = received[-1]["id"]
        world.message(mine, "while away")
        world.message(theirs, "still not for me")
        world.message(mine, "while away 2")
        page.evaluate(_LISTEN, [f"/api/stream?ticket={world.ticket(world.mine.user)}&last_event_id={last_seen}",
                                list(EVENT_TYPES)])  # fmt: skip
        page.wait_for_function("window.source.readyState === 1")
        world.message(mine, "back live")

        # then it gets exactly what it missed, then live, nothing twice
        page.wait_for_function("window.received.length >= 3")
        page.wait_for_timeout(500)  # a duplicate, if any, would arrive meanwhile
        assert [_summary(event) for event in _received(page)] == [
            ("message.created", 1, "while away"), ("message.created", 1, "while away 2"), ("message.created", 1, "back live"),
        ]
    finally:
        context.close()
