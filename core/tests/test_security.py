"""Security basics (docs/security.md): secrets never in responses, admin pages or logs; constant-time
credential checks that answer 401 to anything wrong; password hashing and validation; production
settings; request size limits; a deleted tenant's Redis keys."""

import json
import logging
import os
import subprocess
import sys
import uuid

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.core.cache import cache
from django.test import Client, override_settings
from django_tenants.utils import schema_context

from agents.services import allocation_settings_get
from core.tests.fixtures.workers import WorkerProcess
from core.tests.support import api_client, host_of, make_user, PASSWORD, ROOT, token_for, wait_for
from conversations import inbound
from conversations.models import Application
from conversations.services import application_create
from core.models import User
from core.redis import get_redis
from core.services import user_create
from scheduler.models import SchedulerSetting
from scheduler.services import outbound_cache_key, scheduler_update
from tenants.services import tenant_delete

QISCUS_KEY_HEADER = "HTTP_X_SOCIOMILE_INTEGRATION_KEY"
SIGNATURE_HEADER = "HTTP_X_SOCIOMILE_SIGNATURE"


def _text(response) -> str:
    return response.content.decode("utf-8", "replace")


def _assert_nowhere(secret: str, *texts: str) -> None:
    assert len(secret) >= 8  # a short value could appear by chance
    for text in texts:
        assert secret not in text


@pytest.fixture
def admin_pages(tenant_a, tenant_a_admin) -> Client:
    """The tenant's Django admin, signed in as one of its admins."""
    client = Client(HTTP_HOST=host_of(tenant_a))
    assert client.post("/admin/login/", {"username": tenant_a_admin.email, "password": PASSWORD}).status_code == 302
    return client


@pytest.fixture
def captured_logs(caplog):
    # Everything our code and Django log, at every level (SQL stays out: django.db.backends is pinned to WARNING).
    caplog.set_level(logging.DEBUG)
    return caplog


# --- 1. secrets never in responses, admin pages or logs ------------------------------------------------------


def test_the_webhook_secret_is_returned_by_create_only(tenant_a, tenant_a_admin_api, admin_pages, captured_logs):
    created = tenant_a_admin_api.post("/api/applications", {"name": "Shop"})
    token, secret = created.json()["token"], created.json()["webhook_secret"]
    client = api_client(tenant=tenant_a)
    with schema_context(tenant_a.schema_name):
        application_id = Application.objects.get(token=token).id

    seen = [
        tenant_a_admin_api.get("/api/applications"),
        tenant_a_admin_api.get(f"/api/applications/{token}"),
        tenant_a_admin_api.patch(f"/api/applications/{token}", {"name": "Shop 2"}),
        tenant_a_admin_api.put(f"/api/applications/{token}", {"name": ""}),  # 400
        tenant_a_admin_api.get("/api/applications/unknown-token"),  # 404
        client.post(f"/api/channels/{token}/webhook", {"customer_id": "c", "message": "hi"}),  # 401: unsigned
        client.post(f"/api/channels/{token}/webhook", {"customer_id": "c"}, **{SIGNATURE_HEADER: "sha256=" + secret}),
        admin_pages.get("/admin/conversations/application/"),
        admin_pages.get(f"/admin/conversations/application/{application_id}/change/"),
        admin_pages.get("/api/schema/"),
    ]

    assert created.status_code == 201
    assert [response.status_code for response in seen] == [200, 200, 200, 400, 404, 401, 401, 200, 200, 200]
    _assert_nowhere(secret, *map(_text, seen), captured_logs.text)
    # the admin shows which secret it is, not the secret
    assert f"\u2022\u2022\u2022\u2022{secret[-4:]}" in _text(seen[8])


def test_the_scheduler_auth_key_is_write_only_in_the_api_and_the_admin(
    tenant_a, tenant_a_admin_api, admin_pages, captured_logs
):
    auth_key = "auth-" + uuid.uuid4().hex

    patched = tenant_a_admin_api.patch("/api/scheduler", {"auth_key": auth_key, "batch_size": 3})
    seen = [
        patched,
        tenant_a_admin_api.get("/api/scheduler"),
        tenant_a_admin_api.patch("/api/scheduler", {"auth_key": auth_key, "batch_size": 0}),  # 400
        tenant_a_admin_api.post("/api/scheduler/stop"),
        tenant_a_admin_api.post("/api/scheduler/start"),
        admin_pages.get("/admin/scheduler/schedulersetting/"),
        admin_pages.get("/admin/scheduler/schedulersetting/1/change/"),
    ]

    assert [response.status_code for response in seen] == [200, 200, 400, 200, 200, 200, 200]
    _assert_nowhere(auth_key, *map(_text, seen), captured_logs.text)
    with schema_context(tenant_a.schema_name):
        assert SchedulerSetting.objects.get().auth_key == auth_key


def test_the_admin_keeps_the_auth_key_unless_a_new_one_is_typed_or_it_is_removed(tenant_a, admin_pages):
    with schema_context(tenant_a.schema_name):
        scheduler_update(auth_key="the-first-key-123")
    form = {"interval_seconds": 120, "batch_size": 2, "webhook_url": ""}
    # as a browser posts it: fields with a callable default carry their initial value in a hidden input
    form |= {f"initial-{name}": value for name, value in form.items()}
    url = "/admin/scheduler/schedulersetting/1/change/"

    def saved_key() -> str:
        with schema_context(tenant_a.schema_name):
            return SchedulerSetting.objects.get().auth_key

    assert admin_pages.post(url, {**form, "auth_key": ""}).status_code == 302
    assert saved_key() == "the-first-key-123"
    assert admin_pages.post(url, {**form, "auth_key": "a-second-key-456"}).status_code == 302
    assert saved_key() == "a-second-key-456"
    assert admin_pages.post(url, {**form, "remove_auth_key": "on"}).status_code == 302
    assert saved_key() == ""
    with schema_context(tenant_a.schema_name):  # the admin's history names the key only when it changed
        history = [entry.get_change_message() for entry in LogEntry.objects.order_by("id")]
    assert history == ["No fields changed.", "Changed New auth key.", "Changed Remove the auth key."]


def test_the_qiscus_integration_key_is_shown_to_admins_by_its_api_only(
    tenant_a, tenant_a_admin_api, admin_pages, captured_logs
):
    with schema_context(tenant_a.schema_name):
        settings_row = allocation_settings_get()
        key = settings_row.qiscus_integration_key
    agent_api = api_client(tenant=tenant_a, token=token_for(make_user(tenant=tenant_a, role="agent"), tenant=tenant_a))
    client = api_client(tenant=tenant_a)
    allocation = "/api/integrations/qiscus/agent-allocation"

    integration = tenant_a_admin_api.get("/api/integrations/qiscus")
    seen = [
        agent_api.get("/api/integrations/qiscus"),  # 403
        client.get("/api/integrations/qiscus"),  # 401
        client.post(allocation, {"room_id": "r1"}, **{QISCUS_KEY_HEADER: key[:-1]}),  # 401
        client.post(allocation, {}, **{QISCUS_KEY_HEADER: key}),  # 400: a right key, a bad payload
        admin_pages.get("/admin/agents/allocationsettings/"),
        admin_pages.get(f"/admin/agents/allocationsettings/{settings_row.pk}/change/"),
    ]

    assert integration.status_code == 200 and integration.json()["integration_key"] == key
    assert [response.status_code for response in seen] == [403, 401, 401, 400, 200, 200]
    _assert_nowhere(key, *map(_text, seen), captured_logs.text)


def test_passwords_and_their_hashes_never_come_back(tenant_a, tenant_a_admin_api, platform_api, admin_pages, captured_logs):
    password = "agent-password-" + uuid.uuid4().hex[:8]
    tenant_password = "tenant-password-" + uuid.uuid4().hex[:8]

    created = tenant_a_admin_api.post("/api/agents", {"email": "dewi@example.test", "password": password})
    with schema_context(tenant_a.schema_name):
        user = User.objects.get(email="dewi@example.test")
    seen = [
        created,
        tenant_a_admin_api.get("/api/agents"),
        tenant_a_admin_api.post("/api/agents", {"email": "dewi@example.test", "password": password}),  # 400: taken
        api_client(tenant=tenant_a).post("/api/auth/token", {"email": "dewi@example.test", "password": password + "x"}),
        platform_api.post("/api/tenants", {"name": "X", "slug": "Bad Slug", "admin_email": "a@x.test",
                                           "admin_password": tenant_password}),  # fmt: skip
        admin_pages.get("/admin/core/user/"),
        admin_pages.get(f"/admin/core/user/{user.pk}/change/"),
    ]

    assert [response.status_code for response in seen] == [201, 200, 400, 400, 400, 200, 200]
    _assert_nowhere(password, *map(_text, seen), captured_logs.text)
    _assert_nowhere(tenant_password, *map(_text, seen), captured_logs.text)
    # the admin's password widget shows the algorithm and a masked hash, never the stored string
    _assert_nowhere(user.password.split("$")[-1], _text(seen[-1]))


def test_api_tokens_are_only_ever_handed_to_their_owner(tenant_a, tenant_a_admin, tenant_a_admin_api, captured_logs):
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    agent_token = token_for(agent, tenant=tenant_a)
    admin_token = token_for(tenant_a_admin, tenant=tenant_a)
    agent_api = api_client(tenant=tenant_a, token=agent_token)

    seen = [
        tenant_a_admin_api.get("/api/agents"),
        tenant_a_admin_api.get(f"/api/agents/{agent.pk}"),
        tenant_a_admin_api.get("/api/auth/me"),
        agent_api.get("/api/auth/me"),
        agent_api.get("/api/agents"),
        agent_api.patch(f"/api/agents/{tenant_a_admin.pk}", {"is_online": True}),  # 403
        api_client(tenant=tenant_a, token=agent_token[:-1]).get("/api/auth/me"),  # 401
    ]
    signed_in = api_client(tenant=tenant_a).post("/api/auth/token", {"email": agent.email, "password": PASSWORD})

    assert [response.status_code for response in seen] == [200, 200, 200, 200, 200, 403, 401]
    assert signed_in.json()["token"] == agent_token
    _assert_nowhere(agent_token, *map(_text, seen), captured_logs.text)
    _assert_nowhere(admin_token, *map(_text, seen), _text(signed_in), captured_logs.text)


def test_the_platform_admin_lists_no_api_tokens(db):
    operator = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    other_token = token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None)
    client = Client(HTTP_HOST=host_of(None))
    client.login(email=operator.email, password=PASSWORD)

    index = client.get("/admin/")
    tokens = client.get("/admin/authtoken/tokenproxy/")
    users = client.get("/admin/core/user/")

    assert index.status_code == 200 and b"Tokens" not in index.content
    assert tokens.status_code == 404
    _assert_nowhere(other_token, _text(index), _text(tokens), _text(users))


def test_a_server_error_answers_generic_json(tenant_a, tenant_a_admin, monkeypatch, captured_logs):
    # given a bug that puts a secret into an exception's message
    def broken(request):
        raise RuntimeError(f"boom {settings.SECRET_KEY} {settings.DATABASES['default']['HOST']}")

    monkeypatch.setattr("core.apis.AuthMeApi.get", lambda self, request: broken(request))
    client = Client(HTTP_HOST=host_of(tenant_a), raise_request_exception=False)

    response = client.get("/api/auth/me", HTTP_AUTHORIZATION=f"Token {token_for(tenant_a_admin, tenant=tenant_a)}")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
    _assert_nowhere(settings.SECRET_KEY, _text(response))


@pytest.mark.parametrize(
    "method, path, status",
    [("get", "/no/such/page", 404), ("put", "/api/auth/token", 405), ("get", "/api/tenants", 401),
     ("get", "/api/agents", 401)],
)
def test_error_pages_are_json_and_name_no_setting(tenant_a, method, path, status):
    host = host_of(None) if path == "/api/tenants" else host_of(tenant_a)

    response = getattr(Client(HTTP_HOST=host), method)(path)

    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    _assert_nowhere(settings.SECRET_KEY, _text(response))


def test_a_disallowed_host_is_a_json_400(db, settings):
    settings.ALLOWED_HOSTS = [settings.BASE_DOMAIN, f".{settings.BASE_DOMAIN}"]

    response = Client(HTTP_HOST="evil.example").get("/health")

    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request."}


def test_an_unreachable_redis_is_reported_without_its_password(db, captured_logs):
    password = "p4ss-" + uuid.uuid4().hex
    redis_url = f"redis://nobody:{password}@127.0.0.1:1/0"  # nothing listens on port 1
    get_redis.cache_clear()
    try:
        with override_settings(REDIS_URL=redis_url):
            response = Client(HTTP_HOST=host_of(None)).get("/health")
    finally:
        get_redis.cache_clear()

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "redis": "error: ConnectionError"}
    _assert_nowhere(password, _text(response), captured_logs.text)


@pytest.mark.worker
def test_a_worker_never_logs_the_database_or_redis_password(live_db):
    # given a Redis user with a password (an ACL user: the test server's default user stays open), and a
    # database password (the throwaway cluster trusts local connections and ignores it)
    redis = get_redis()
    redis_password, database_password = "redis-" + uuid.uuid4().hex, "db-" + uuid.uuid4().hex
    redis_user = "sec-" + uuid.uuid4().hex[:6]
    redis.execute_command("ACL", "SETUSER", redis_user, "on", f">{redis_password}", "~*", "&*", "+@all")
    host, port, db = redis.connection_pool.connection_kwargs["host"], redis.connection_pool.connection_kwargs["port"], \
        redis.connection_pool.connection_kwargs["db"]  # fmt: skip
    database = settings.DATABASES["default"]
    environment = {
        "REDIS_URL": f"redis://{redis_user}:{redis_password}@{host}:{port}/{db}",
        "DATABASE_URL": f"postgres://{database['USER']}:{database_password}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
    }
    worker = WorkerProcess(name=f"secrets-{uuid.uuid4().hex[:6]}", concurrency=1, extra_env=environment)
    try:
        # when it runs (connected to all three: the banner and the ready line name the broker, RabbitMQ,
        # and the tenant queue sync uses the database and Redis)
        wait_for(lambda: "Connected to " in worker.log() and "tenant queues: started consuming" in worker.log(),
                 message="the worker to connect")  # fmt: skip
    finally:
        worker.stop()
        redis.execute_command("ACL", "DELUSER", redis_user)

    # then its log names the broker's user with its password masked, and never a password
    log = worker.log()
    assert "amqp://guest:**@127.0.0.1:" in log
    _assert_nowhere(redis_password, log)
    _assert_nowhere(database_password, log)


# --- 2. credential checks: constant-time, and 401 for anything wrong --------------------------------------------

WRONG_VALUES = {
    "empty": "",
    "partial": None,  # the right value minus its last character
    "wrong": "0" * 64,
    # UTF-8 as a WSGI server hands it over: header bytes decoded as latin-1 (PEP 3333)
    "non-ascii": "sha256=\u00e9\u4e2d\u6587\U0001f600".encode().decode("latin-1"),
    "latin-1 bytes": "\xff\xfe\x00",
}


def _wrong(kind: str, right: str) -> str:
    return right[:-1] if kind == "partial" else WRONG_VALUES[kind]


@pytest.mark.parametrize("kind", WRONG_VALUES)
def test_a_wrong_webhook_signature_is_401(tenant_a, kind, captured_logs):
    with schema_context(tenant_a.schema_name):
        application = application_create(name="Shop")
    body = json.dumps({"customer_id": "c", "message": "hi"}).encode()
    right = inbound.signature_for(secret=application.webhook_secret, body=body)

    response = api_client(tenant=tenant_a).post(
        f"/api/channels/{application.token}/webhook", data=body, content_type="application/json",
        **{SIGNATURE_HEADER: _wrong(kind, right)},
    )  # fmt: skip

    assert response.status_code == 401
    assert response.json() == {"detail": "Missing or invalid X-Sociomile-Signature header."}
    _assert_nowhere(application.webhook_secret, captured_logs.text)


@pytest.mark.parametrize("kind", WRONG_VALUES)
def test_a_wrong_qiscus_integration_key_is_401(tenant_a, kind):
    with schema_context(tenant_a.schema_name):
        key = allocation_settings_get().qiscus_integration_key

    response = api_client(tenant=tenant_a).post(
        "/api/integrations/qiscus/agent-allocation", {"room_id": "r1"}, **{QISCUS_KEY_HEADER: _wrong(kind, key)}
    )

    assert response.status_code == 401
    assert response.json() == {"detail": "Missing or wrong X-Sociomile-Integration-Key."}


@pytest.mark.parametrize("kind", WRONG_VALUES)
def test_a_wrong_metrics_bearer_token_is_401(db, kind):
    right = "scrape-" + uuid.uuid4().hex
    with override_settings(METRICS_BEARER_TOKEN=right):
        response = api_client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {_wrong(kind, right)}")

    assert response.status_code == 401


@pytest.mark.parametrize("kind", WRONG_VALUES)
def test_a_wrong_api_token_is_401(tenant_a, tenant_a_admin, kind):
    right = token_for(tenant_a_admin, tenant=tenant_a)

    response = Client(HTTP_HOST=host_of(tenant_a)).get("/api/auth/me", HTTP_AUTHORIZATION=f"Token {_wrong(kind, right)}")

    assert response.status_code == 401


def test_secrets_are_compared_with_hmac_compare_digest_only():
    # A guard against a later `==` on a secret: every comparison of one in our code goes through
    # hmac.compare_digest (webhook signature, integration key, metrics bearer token).
    import re

    pattern = re.compile(r"(secret|integration_key|auth_key|bearer|signature|expected)\w*\s*[!=]=|[!=]=\s*[\w.]*(secret|integration_key|auth_key|signature)\b", re.I)  # fmt: skip
    offenders = []
    for app in ("agents", "conversations", "core", "integrations", "scheduler", "tenants", "sociomile"):
        for path in (ROOT / app).rglob("*.py"):
            # (settings compare configuration at start-up, not a caller's credential)
            if {"tests", "migrations", "settings"} & set(path.parts):
                continue
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                          if pattern.search(line)]  # fmt: skip
    uses = {path: (ROOT / path).read_text().count("hmac.compare_digest(") for path in
            ("conversations/inbound.py", "integrations/qiscus/apis.py", "tenants/apis.py")}  # fmt: skip

    assert offenders == []
    assert uses == {"conversations/inbound.py": 1, "integrations/qiscus/apis.py": 1, "tenants/apis.py": 1}


# --- 3. passwords ---------------------------------------------------------------------------------------------


PRODUCTION_SETTINGS = (
    "DEBUG", "PASSWORD_HASHERS", "SECURE_CONTENT_TYPE_NOSNIFF", "SECURE_REFERRER_POLICY", "X_FRAME_OPTIONS",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", "CSRF_TRUSTED_ORIGINS", "OUTBOUND_WEBHOOK_ALLOW_PRIVATE", "SECURE_REDIRECT_EXEMPT",
)  # fmt: skip


@pytest.fixture(scope="session")
def production_settings() -> dict:
    """Settings as `sociomile.settings.production` computes them (a fresh process, read once: session-scoped,
    since pytest-django's reordering of db and non-db tests would tear down a module-scoped one between them)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sociomile.settings.production", "SECRET_KEY": "s" * 60}
    script = (
        "import django, json; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name) for name in {PRODUCTION_SETTINGS!r}}}))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_production_hashes_passwords_with_argon2(tenant_a, production_settings):
    hashers = production_settings["PASSWORD_HASHERS"]

    with override_settings(PASSWORD_HASHERS=hashers), schema_context(tenant_a.schema_name):
        user = user_create(email="argon@example.test", password="a-long-password-42", role=User.Role.AGENT)
        assert user.check_password("a-long-password-42")

    assert hashers[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    assert user.password.startswith("argon2$argon2id$")


@pytest.mark.parametrize(
    "password, message",
    [
        ("short1!", "This password is too short. It must contain at least 8 characters."),
        ("password123", "This password is too common."),
        ("8472910365", "This password is entirely numeric."),
    ],
)
def test_agent_creation_refuses_a_weak_password(tenant_a, tenant_a_admin_api, password, message):
    response = tenant_a_admin_api.post("/api/agents", {"email": "weak@example.test", "password": password})

    assert response.status_code == 400
    assert message in response.json()["password"]
    with schema_context(tenant_a.schema_name):
        assert not User.objects.filter(email="weak@example.test").exists()


def test_tenant_creation_refuses_a_weak_admin_password(platform_api):
    # (one case: the validators are the same, and each refusal costs a schema clone rolled back)
    response = platform_api.post(
        "/api/tenants", {"name": "Weak", "slug": "weak", "admin_email": "a@weak.test", "admin_password": "password123"}
    )

    assert response.status_code == 400
    assert response.json() == {"password": ["This password is too common."]}


# --- 4. production settings -----------------------------------------------------------------------------------


def test_production_settings_turn_debug_off_and_send_secure_headers(production_settings):
    values = {name: value for name, value in production_settings.items() if name != "PASSWORD_HASHERS"}

    assert values == {
        "DEBUG": False,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "X_FRAME_OPTIONS": "DENY",
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "CSRF_TRUSTED_ORIGINS": ["https://localhost", "https://*.localhost"],
        "OUTBOUND_WEBHOOK_ALLOW_PRIVATE": False,
        "SECURE_REDIRECT_EXEMPT": ["^health$"],
    }


def test_check_deploy_passes_with_the_production_settings():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sociomile.settings.production", "SECRET_KEY": uuid.uuid4().hex * 2}

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_secure_headers_are_sent(tenant_a):
    with override_settings(SECURE_HSTS_SECONDS=3600, SECURE_SSL_REDIRECT=True, SECURE_REDIRECT_EXEMPT=[r"^health$"]):
        over_https = Client(HTTP_HOST=host_of(tenant_a)).get("/health", secure=True)
        over_http = Client(HTTP_HOST=host_of(tenant_a)).get("/api/applications")
        health_over_http = Client(HTTP_HOST=host_of(tenant_a)).get("/health")

    assert over_https["Strict-Transport-Security"] == "max-age=3600"
    assert over_https["X-Content-Type-Options"] == "nosniff"
    assert over_https["Referrer-Policy"] == "same-origin"
    assert over_https["X-Frame-Options"] == "DENY"
    assert (over_http.status_code, over_http["Location"]) == (301, f"https://{host_of(tenant_a)}/api/applications")
    assert health_over_http.status_code == 200  # load balancers probe over plain HTTP


# --- 5. request size limits -----------------------------------------------------------------------------------


def test_an_oversized_json_body_is_413_and_writes_nothing(tenant_a, tenant_a_admin_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = tenant_a_admin_api.post("/api/applications", {"name": "x" * 2000})

    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."}
    with schema_context(tenant_a.schema_name):
        assert not Application.objects.exists()


def test_oversized_bodies_on_the_platform_and_integration_apis_are_413(tenant_a, platform_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    with schema_context(tenant_a.schema_name):
        key = allocation_settings_get().qiscus_integration_key

    responses = [
        platform_api.post(f"/api/tenants/{tenant_a.id}/messages", {"payload": {"blob": "x" * 2000}}),
        api_client(tenant=tenant_a).post(
            "/api/integrations/qiscus/agent-allocation", {"room_id": "x" * 2000}, **{QISCUS_KEY_HEADER: key}
        ),
        api_client(tenant=tenant_a).post("/api/auth/token", {"email": "a@b.test", "password": "x" * 2000}),
    ]

    assert [response.status_code for response in responses] == [413, 413, 413]
    assert {response.json()["detail"] for response in responses} == {
        "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."
    }


def test_an_oversized_form_on_the_admin_is_413_json(tenant_a, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = Client(HTTP_HOST=host_of(tenant_a)).post("/admin/login/", {"username": "a", "password": "x" * 2000})

    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."}


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"name":' * 50_000, b"\xff\xfe", b'{"name": NaN}'])
def test_hostile_json_is_400_not_500(tenant_a, tenant_a_admin_api, body):
    response = tenant_a_admin_api.post("/api/applications", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error - ")
    with schema_context(tenant_a.schema_name):
        assert not Application.objects.exists()


@pytest.mark.parametrize("limit", ["100000000000000000000000", "-5", "0", "abc", "1e9"])
def test_a_silly_page_limit_is_refused_with_a_400(tenant_a, tenant_a_admin_api, limit):
    # A huge or malformed limit never reaches the database as a huge page (core/pagination.py).
    response = tenant_a_admin_api.get(f"/api/applications?limit={limit}")

    assert response.status_code == 400
    assert response.json() == {"limit": ["Must be an integer from 1 to 200."]}


# --- 7. a deleted tenant leaves no Redis keys ------------------------------------------------------------------


@pytest.mark.worker
def test_deleting_a_tenant_removes_every_redis_key_it_had(make_live_tenant):
    # given a tenant that used everything that keeps state in Redis
    tenant = make_live_tenant("keys")
    admin = make_user(tenant=tenant, role=User.Role.ADMIN)
    api = api_client(tenant=tenant, token=token_for(admin, tenant=tenant))
    application = api.post("/api/applications", {"name": "Shop"}).json()
    client = api_client(tenant=tenant)
    body = json.dumps({"customer_id": "c1", "message": "hi", "external_id": "e1"}).encode()
    signature = inbound.signature_for(secret=application["webhook_secret"], body=body)
    assert client.post(f"/api/channels/{application['token']}/webhook", data=body, content_type="application/json",
                       **{SIGNATURE_HEADER: signature}).status_code == 202  # fmt: skip
    assert client.post(f"/api/applications/{application['token']}/chats", {"customer_id": "c2"}).status_code == 202
    with schema_context(tenant.schema_name):
        get_redis().set(outbound_cache_key(schema_name=tenant.schema_name, message_id=uuid.uuid4()), "{}")
        cache.set("something", 1)
    before = list(get_redis().scan_iter(f"sociomile:{tenant.schema_name}:*"))

    # when it is deleted
    tenant_delete(tenant=tenant)

    # then nothing of it is left
    assert len(before) >= 5
    assert list(get_redis().scan_iter(f"sociomile:{tenant.schema_name}:*")) == []
    assert list(get_redis().scan_iter(f"{tenant.schema_name}:*")) == []
