"""The events app's fixtures: a real local HTTP receiver that keeps the raw body (to verify signatures)."""

import contextlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest
from django_tenants.utils import schema_context

from core.tests.fixtures.webhooks import local_http_server
from core.tests.support import api_client, make_user, token_for
from conversations import services as conversation_services
from conversations.models import Application
from core.models import User


@dataclass
class Delivered:
    path: str
    headers: dict
    body: bytes


@dataclass
class EventReceiver:
    """Records every POST with its raw body; answers the scripted statuses in order, then `default_status`.
    A status of None hangs the request until `released` (the sender's timeout or the test's end)."""

    url: str = ""
    requests: list[Delivered] = field(default_factory=list)
    statuses: list[int | None] = field(default_factory=list)
    default_status: int | None = 200
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)

    def script(self, *statuses: int | None) -> None:
        with self.lock:
            self.statuses.extend(statuses)

    def received(self) -> list[Delivered]:
        with self.lock:
            return list(self.requests)


def _handler(receiver: EventReceiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                receiver.requests.append(Delivered(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
            receiver.arrived.set()
            if status is None:
                receiver.released.wait(60)
                return
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def _served_receiver():
    receiver = EventReceiver()
    with local_http_server(_handler(receiver), path="/events") as url:
        receiver.url = url
        yield receiver
        receiver.released.set()


@pytest.fixture
def event_receiver():
    with _served_receiver() as receiver:
        yield receiver


@pytest.fixture
def second_event_receiver():
    """Another receiver (a server of its own), for tests of two endpoints that answer differently."""
    with _served_receiver() as receiver:
        yield receiver


@pytest.fixture
def drained(monkeypatch):
    """Creations drained in this process (tests inside a rolled-back transaction: no worker sees the rows)."""
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)

    def drain(tenant) -> int:
        with schema_context(tenant.schema_name):
            return conversation_services.creations_persist(batch_size=1000)

    return drain


@pytest.fixture
def application_a(tenant_a) -> Application:
    with schema_context(tenant_a.schema_name):
        return conversation_services.application_create(name="Support A")


@pytest.fixture
def agent_a_api(tenant_a):
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    return api_client(tenant=tenant_a, token=token_for(agent, tenant=tenant_a))
