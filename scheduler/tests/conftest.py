"""A real HTTP receiver standing in for the delivery provider, and a real `celery beat` process."""

import json
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import TEST_OUTPUT, ChildProcess, wait_for


@dataclass
class Reply:
    status: int = 202
    body: object = None  # JSON-encoded unless bytes; None: {"messageId": "msg-<n>"}
    hang: bool = False  # never answer (until the receiver stops): the client's timeout fires
    headers: dict = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: dict
    body: dict
    tenant_hint: str = ""


@dataclass
class WebhookReceiver:
    """Records every POST; answers with the scripted replies in order, then 202 {"messageId": "msg-<n>"}."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [request for request in self.requests if path is None or request.path == path]

    def keys(self, path: str | None = None) -> list[str]:
        return [request.headers["idempotency-key"] for request in self.received(path)]


def _handler(receiver: WebhookReceiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            with receiver.lock:
                receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                number = len(receiver.requests)
                reply = receiver.replies.pop(0) if receiver.replies else Reply()
            if reply.hang:
                receiver.released.wait(30)
                return
            payload = reply.body if reply.body is not None else {"messageId": f"msg-{number}"}
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    # Runs send up to OUTBOUND_SEND_CONCURRENCY requests each at once: the default listen backlog (5) could
    # turn a burst of connections into connection errors, which the product rightly retries later.
    request_queue_size = 128


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    server = _Server(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.released.set()
    server.shutdown()
    server.server_close()


class BeatProcess(ChildProcess):
    """A real `celery beat` subprocess with django-celery-beat's DatabaseScheduler on the test database."""

    def __init__(self, *, max_interval: int = 1):
        TEST_OUTPUT.mkdir(exist_ok=True)
        name = uuid.uuid4().hex[:6]
        command = [
            sys.executable, "-m", "celery", "-A", "sociomile", "beat", "--loglevel", "INFO",
            # How often beat wakes up at most, and so how fast it sees a schedule changed in the database.
            "--max-interval", str(max_interval),
            "--pidfile", "", "--schedule", str(TEST_OUTPUT / f"beat-{name}.schedule"),
        ]  # fmt: skip
        super().__init__(log_name=f"beat-{name}", command=command)
        wait_for(lambda: "beat: Starting" in self.log() or self.process.poll() is not None,
                 timeout=30, message="beat to start")  # fmt: skip
        if self.process.poll() is not None:
            pytest.fail(f"beat exited at start:\n{self.log()}")

    def stop(self, timeout: float = 15) -> int:
        return super().stop(timeout)


@pytest.fixture
def celery_beat(live_db):
    beat = BeatProcess()
    yield beat
    beat.stop()
