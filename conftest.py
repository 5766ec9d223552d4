"""Shared fixtures: real PostgreSQL and Redis (started by bin/test), two tenants made once per session,
API clients per host, and a real Celery worker process for the flows that promise asynchrony."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context
from rest_framework.test import APIClient

from core.models import User
from core.redis import get_redis
from core.routing import routing_caches_clear
from core.services import user_create, user_token_get_or_create
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from tenants.work import CREATIONS_ACTIVE_KEY

ROOT = Path(__file__).resolve().parent
TEST_OUTPUT = ROOT / "test-output"
PASSWORD = "test-password-1234"


def wait_for(predicate, *, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    """Polls until predicate() is truthy and returns its value; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def host_of(tenant: Tenant | None) -> str:
    return settings.BASE_DOMAIN if tenant is None else f"{tenant.schema_name}.{settings.BASE_DOMAIN}"


def api_client(*, tenant: Tenant | None = None, token: str | None = None) -> APIClient:
    """A DRF test client speaking JSON to the platform host (tenant=None) or to a tenant's host."""
    client = APIClient(HTTP_HOST=host_of(tenant))
    client.default_format = "json"
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def make_user(*, tenant: Tenant | None, role: str, email: str | None = None) -> User:
    schema = get_public_schema_name() if tenant is None else tenant.schema_name
    with schema_context(schema):
        return user_create(email=email or f"{role}-{uuid.uuid4().hex[:8]}@example.test", password=PASSWORD, role=role)


def token_for(user: User, *, tenant: Tenant | None) -> str:
    schema = get_public_schema_name() if tenant is None else tenant.schema_name
    with schema_context(schema):
        return user_token_get_or_create(user=user).key


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """The test database, always: pytest-django only creates it when some collected test asks for `db`,
    and a run of `live_db` tests alone would otherwise talk to the unmigrated main database."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=0)


@pytest.fixture(scope="session", autouse=True)
def _flush_test_redis():
    # Our own Redis database: stale messages or counters from another run must not queue ahead of ours.
    get_redis().flushdb()


@pytest.fixture(scope="session")
def session_tenants(django_db_setup, django_db_blocker):
    """Two tenants created once and committed (schema creation runs migrations: too slow per test)."""
    with django_db_blocker.unblock():
        tenants = {}
        for slug in ("alpha", "beta"):
            tenants[slug] = tenant_create(
                name=slug.title(), slug=slug, admin_email=f"admin@{slug}.test", admin_password=PASSWORD
            )
        connection.set_schema_to_public()
    return tenants


def _forget_redis_state(tenant: Tenant) -> None:
    # The session tenants' rows roll back after each test; their Redis counters and queues must go too.
    redis = get_redis()
    keys = list(redis.scan_iter(f"sociomile:{tenant.schema_name}:*"))
    if keys:
        redis.delete(*keys)
    redis.zrem(CREATIONS_ACTIVE_KEY, tenant.schema_name)  # its place among tenants with queued creations


@pytest.fixture
def tenant_a(session_tenants, db) -> Tenant:
    yield session_tenants["alpha"]
    _forget_redis_state(session_tenants["alpha"])


@pytest.fixture
def tenant_b(session_tenants, db) -> Tenant:
    yield session_tenants["beta"]
    _forget_redis_state(session_tenants["beta"])


@pytest.fixture(autouse=True)
def _back_to_public_schema():
    # A request or a service may leave the connection in a tenant's schema; the next test starts public.
    yield
    connection.set_schema_to_public()


@pytest.fixture(autouse=True)
def _forget_routing_cache():
    # A rolled-back test transaction undoes rows without any save/delete hook: cached hosts and tokens must go.
    yield
    routing_caches_clear()


@pytest.fixture
def platform_token(db) -> str:
    return token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None)


@pytest.fixture
def platform_api(platform_token) -> APIClient:
    return api_client(token=platform_token)


@pytest.fixture
def tenant_a_admin(tenant_a) -> User:
    return make_user(tenant=tenant_a, role=User.Role.ADMIN)


@pytest.fixture
def tenant_a_admin_api(tenant_a, tenant_a_admin) -> APIClient:
    return api_client(tenant=tenant_a, token=token_for(tenant_a_admin, tenant=tenant_a))


@pytest.fixture
def tenant_b_admin_api(tenant_b) -> APIClient:
    admin = make_user(tenant=tenant_b, role=User.Role.ADMIN)
    return api_client(tenant=tenant_b, token=token_for(admin, tenant=tenant_b))


# --- the outbound delivery provider's stand-in ------------------------------------------------------------


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
    # shutdown() waits for the serving loop's next poll: 0.5 s by default, paid at every test's teardown.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield receiver
    receiver.released.set()
    server.shutdown()
    server.server_close()


# --- committed data and real workers -----------------------------------------------------------------


@pytest.fixture
def live_db(django_db_setup, django_db_blocker):
    """Database access without a wrapping transaction: writes commit and worker processes see them.

    Tests using it clean up after themselves (tenants made with `make_live_tenant` are deleted).
    """
    with django_db_blocker.unblock():
        yield
        connection.set_schema_to_public()


@pytest.fixture
def make_live_tenant(live_db):
    """Creates committed tenants for the test and deletes them (schema, queue) afterwards."""
    created: list[Tenant] = []

    def make(slug_prefix: str = "live", **kwargs) -> Tenant:
        slug = f"{slug_prefix}-{uuid.uuid4().hex[:8]}"
        tenant = tenant_create(
            name=kwargs.pop("name", slug),
            slug=slug,
            admin_email=kwargs.pop("admin_email", f"admin@{slug}.test"),
            admin_password=PASSWORD,
            **kwargs,
        )
        created.append(tenant)
        return tenant

    yield make
    connection.set_schema_to_public()
    for tenant in created:
        if Tenant.objects.filter(id=tenant.id).exists():
            tenant_delete(tenant=tenant)


def _test_database_url() -> str:
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class ChildProcess:
    """A subprocess of the test run on the test database and Redis; its output goes to test-output/<log_name>.log."""

    def __init__(self, *, log_name: str, command: list[str], extra_env: dict | None = None):
        TEST_OUTPUT.mkdir(exist_ok=True)
        self.log_path = TEST_OUTPUT / f"{log_name}.log"
        env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "DJANGO_SETTINGS_MODULE": "sociomile.settings.test",
            **(extra_env or {}),
        }
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 (open while the process runs; stop() closes it)
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=self.log_file, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; returns its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode


class WorkerProcess(ChildProcess):
    """A real `celery worker` subprocess on the test database and Redis."""

    def __init__(self, *, name: str, concurrency: int = 2, extra_env: dict | None = None, wait: bool = True):
        self.name = name
        command = [
            sys.executable, "-m", "celery", "-A", "sociomile", "worker", "-Q", "platform",
            "--pool", "prefork", "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
            "--without-mingle", "--without-gossip", "--loglevel", "INFO",
        ]  # fmt: skip
        super().__init__(log_name=f"worker-{name}", command=command, extra_env=extra_env)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Waits until the worker consumes (start several with wait=False, then wait: they boot in parallel)."""
        wait_for(lambda: "ready." in self.log_path.read_text() or self.process.poll() is not None,
                 timeout=60, message=f"worker {self.name} to start")  # fmt: skip
        if self.process.poll() is not None:
            pytest.fail(f"worker {self.name} exited at start:\n{self.log_path.read_text()}")


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """One worker process for the whole session, started on first use."""
    worker = WorkerProcess(name=f"test-{uuid.uuid4().hex[:6]}")
    yield worker
    worker.stop()


# --- a whole stack of its own, for the tests that break PostgreSQL, Redis and workers ---------------------


def pytest_addoption(parser):
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=30.0,
        help="how long the soak test (core/tests/live/test_soak.py) drives 64 clients; 30 s in the suite",
    )
