"""Schemathesis against the live server: every operation of both hosts' OpenAPI schemas (`/api/schema/`),
generated requests sent over HTTP to gunicorn, every response checked against the schema.

Checks: every one of schemathesis' built-in checks (no 5xx, only documented statuses, documented content
types and headers, bodies matching their schema, schema-valid data accepted, schema-violating data refused,
missing credentials refused, undeclared methods 405, ...) but response time (docs/quality.md).

Bounded by default (FUZZ_EXAMPLES=5 examples per operation, derandomized: the same requests every run).
A longer, random run with the coverage phase: `FUZZ_EXAMPLES=200 ./bin/test core/tests/test_schemathesis.py`.

Path parameters are pinned to real rows made for the run (an application token, a chat and message
number, a ticket, an agent, an outbound message, a tenant id), so generated requests get past the 404
into the real code. The platform run's tenant id is a tenant made for it: DELETE /api/tenants/{id}
really deletes it. Tenants the fuzzer creates through POST /api/tenants are deleted afterwards.
"""

import contextlib
import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass

import pytest
import schemathesis
from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.core.result import Ok
from schemathesis.pytest.lazy import get_all_tests

from agents.services import agent_create, allocation_settings_get, chat_assign
from core.tests.support import PASSWORD
from conversations import services as conversation_services
from conversations.inbound import SIGNATURE_HEADER
from conversations.models import Chat
from conversations.services import ticket_create
from core.models import User
from core.services import user_create, user_delete, user_token_get_or_create
from core.tests.live_server import LiveServer
from integrations.qiscus.apis import INTEGRATION_KEY_HEADER
from scheduler.services import outbound_message_create
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from workspace.services import canned_response_create, label_create

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
# The default run is part of the suite: the same requests every time. A longer run explores at random.
FUZZ_RANDOM = "FUZZ_EXAMPLES" in os.environ
# schemathesis' coverage phase (boundary values of every parameter and field: hundreds of requests an
# operation) runs in the long run only, or with FUZZ_COVERAGE=1.
FUZZ_COVERAGE = os.environ.get("FUZZ_COVERAGE", "1" if FUZZ_RANDOM else "0") == "1"

pytestmark = pytest.mark.fuzz


@dataclass
class FuzzStack:
    server: LiveServer
    platform_token: str
    victim: Tenant
    tenant: Tenant
    admin_token: str
    agent_token: str
    parameters: dict
    qiscus_headers: dict
    webhook_secret: str


def _seed_tenant(tenant: Tenant) -> tuple[dict, dict, str, str, str]:
    """Rows for the path parameters: (parameters, Qiscus headers, webhook secret, admin token, agent token)."""
    with schema_context(tenant.schema_name):
        admin = User.objects.get(role=User.Role.ADMIN)
        agent = agent_create(email="agent@fuzz.test", password=PASSWORD, name="Fuzz Agent", is_online=True)
        application = conversation_services.application_create(name="Fuzz app")
        number = conversation_services.chat_create(application=application, customer_id="fuzz-customer")
        conversation_services.message_create(application=application, chat_number=number, body="hello fuzz")
        # A second chat for escalation and tickets: the first one the fuzzer may resolve.
        escalated = conversation_services.chat_create(application=application, customer_id="fuzz-customer-2")
        conversation_services.creations_persist(batch_size=100)
        chat = Chat.objects.get(application=application, number=escalated)
        chat_assign(chat=chat, agent=agent)
        ticket = ticket_create(chat=chat, title="Fuzz", description="", priority="low", created_by=agent.user)
        outbound = outbound_message_create(to="+6281234567890", content="fuzz")
        label = label_create(name="fuzz")
        canned = canned_response_create(shortcut="fuzz", body="Hello {{customer_id}}")
        parameters = {
            "token": application.token,
            "number": number,
            "message_number": 1,
            "ticket_id": ticket.id,
            "agent_id": agent.pk,
            "message_id": str(outbound.id),
            "label_id": label.id,
            "canned_response_id": canned.id,
        }
        # Qiscus' webhooks authenticate with the tenant's integration key, not a user token.
        qiscus_headers = {INTEGRATION_KEY_HEADER: allocation_settings_get().qiscus_integration_key}
        admin_token = user_token_get_or_create(user=admin).key
        agent_token = user_token_get_or_create(user=agent.user).key
        return parameters, qiscus_headers, application.webhook_secret, admin_token, agent_token


@pytest.fixture(scope="module")
def fuzz_stack(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        before = set(Tenant.objects.values_list("id", flat=True))
        suffix = uuid.uuid4().hex[:6]
        tenant = tenant_create(name="Fuzz", slug=f"fuzz-{suffix}", admin_email="admin@fuzz.test", admin_password=PASSWORD)
        victim = tenant_create(name="Victim", slug=f"victim-{suffix}", admin_email="admin@victim.test", admin_password=PASSWORD)
        parameters, qiscus_headers, webhook_secret, admin_token, agent_token = _seed_tenant(tenant)
        with schema_context(get_public_schema_name()):
            platform_admin = user_create(email=f"fuzz-{suffix}@platform.test", password=PASSWORD, role=User.Role.PLATFORM_ADMIN)
            platform_token = user_token_get_or_create(user=platform_admin).key
        connection.set_schema_to_public()
        server = LiveServer(name="fuzz")
        try:
            yield FuzzStack(
                server, platform_token, victim, tenant, admin_token, agent_token, parameters, qiscus_headers, webhook_secret
            )
        finally:
            server.stop()
            connection.set_schema_to_public()
            # The run's tenants, and any the fuzzer created through POST /api/tenants.
            for created in Tenant.objects.exclude(id__in=before).exclude(schema_name=get_public_schema_name()):
                tenant_delete(tenant=created)
            with schema_context(get_public_schema_name()):
                user_delete(user=platform_admin)
            connection.set_schema_to_public()


# Where a 400 answers schema-valid input because of a rule no schema can state (it depends on stored data or
# on a secret): positive_data_acceptance accepts a 400 there, and only there.
BUSINESS_RULE_400 = {
    "POST /api/auth/token": "wrong email or password",
    "POST /api/tenants": "weak password, reserved or taken slug",
    "POST /api/agents": "weak password, taken email",
    "POST /api/applications/{token}/chats/{number}/assign": "no agent with this agent_id",
    "PATCH /api/scheduler": "webhook_url: Django's URL validator is stricter than `format: uri` (63-char labels)",
    "POST /api/webhook-endpoints": "url: as PATCH /api/scheduler's webhook_url; application: an existing token",
    "PATCH /api/webhook-endpoints/{endpoint_id}": "url: as PATCH /api/scheduler's webhook_url",
    "GET /api/reports/summary": "since <= until, at most 366 days, years 2000-2999, tz an IANA name: no schema relates two dates",
    "POST /api/applications/{token}/chats/{number}/messages": (
        "body or canned, not both; canned: an existing shortcut; attachments: a url whose host resolves to public addresses"
    ),
    "POST /api/channels/{token}/webhook": "attachments: a url whose host resolves to public addresses",
    "PATCH /api/applications/{token}": "team: an existing team id",
    "PUT /api/applications/{token}": "team: an existing team id",
    "POST /api/teams": "agents: existing agent ids; a window's close after its open, a day's windows apart",
    "PATCH /api/teams/{team_id}": "as POST /api/teams",
    "POST /api/sla-policies": "applications: existing tokens",
    "PATCH /api/sla-policies/{policy_id}": "as POST /api/sla-policies",
    "POST /api/applications/{token}/chats/{number}/transfer": "exactly one of agent_id and team_id, an existing one (as assign)",
}
POSITIVE_STATUSES = ["2xx", "401", "403", "404", "409", "429"]


def _config(*, base_url: str, headers: dict, parameters: dict) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            "headers": headers,
            # schemathesis' default is 10 s; creating a tenant on a busy shared machine can take longer.
            "request-timeout": 120,
            # Path parameters pinned to real rows; `cursor` is opaque (only the server makes valid ones), so
            # generated requests start at the first page rather than die on "Invalid cursor." every time.
            "parameters": {**parameters, "query.cursor": ""},
            "phases": {"coverage": {"enabled": FUZZ_COVERAGE}},
            # DRF refuses NUL in every string ("Null characters are not allowed."): PostgreSQL cannot store it.
            "generation": {"allow-x00": False},
            "checks": {
                # Speed belongs to bench/, not to the suite.
                "max-response-time": {"enabled": False},
                "positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES},
            },
            "operations": [
                {
                    "include-name": name,
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_STATUSES, "400"]}},
                }
                for name in BUSINESS_RULE_400
            ],
        }
    )


def _schema(stack: FuzzStack, *, host: str, token: str, parameters: dict, headers: dict | None = None):
    headers = {"Host": host, "Authorization": f"Token {token}", **(headers or {})}
    config = _config(base_url=stack.server.url, headers=headers, parameters=parameters)
    return schemathesis.openapi.from_url(
        f"{stack.server.url}/api/schema/?format=json", headers=headers, timeout=60, config=config
    )


@pytest.fixture(scope="module")
def platform_schema(fuzz_stack):
    return _schema(
        fuzz_stack, host=settings.BASE_DOMAIN, token=fuzz_stack.platform_token, parameters={"tenant_id": fuzz_stack.victim.id}
    )


@pytest.fixture(scope="module")
def tenant_admin_schema(fuzz_stack):
    host = f"{fuzz_stack.tenant.schema_name}.{settings.BASE_DOMAIN}"
    return _schema(
        fuzz_stack, host=host, token=fuzz_stack.admin_token, parameters=fuzz_stack.parameters, headers=fuzz_stack.qiscus_headers
    )


@pytest.fixture(scope="module")
def tenant_agent_schema(fuzz_stack):
    host = f"{fuzz_stack.tenant.schema_name}.{settings.BASE_DOMAIN}"
    return _schema(
        fuzz_stack, host=host, token=fuzz_stack.agent_token, parameters=fuzz_stack.parameters, headers=fuzz_stack.qiscus_headers
    )


fuzz_settings = hypothesis_settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=not FUZZ_RANDOM,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _signature_headers(case, secret: str) -> dict:
    """The channel webhook's HMAC over the body exactly as it is sent (`requests`' json= serialization), so
    generated deliveries get past the signature check into the real code."""
    if case.operation.path != "/api/channels/{token}/webhook" or not isinstance(case.body, (dict, list, str, int, float)):
        return {}
    try:
        raw = json.dumps(case.body, allow_nan=False).encode()
    except ValueError:
        return {}
    return {SIGNATURE_HEADER: "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()}


SIGN_OUT = "DELETE /api/auth/token"


@contextlib.contextmanager
def _sign_out_tokens(django_db_blocker, *, schema_name: str, role: str):
    """Fresh tokens for the sign-out operation, of a user made for it (deleted afterwards): DELETE
    /api/auth/token revokes the token it is sent with, so with the run's token it would sign the run out
    mid-way (every later request a 401). The run's own token is never sent to it."""
    with django_db_blocker.unblock(), schema_context(schema_name):
        user = user_create(email=f"sign-out-{uuid.uuid4().hex[:8]}@fuzz.test", password=PASSWORD, role=role)

    def fresh() -> str:
        with django_db_blocker.unblock(), schema_context(schema_name):
            return user_token_get_or_create(user=user).key

    try:
        yield fresh
    finally:
        with django_db_blocker.unblock(), schema_context(schema_name):
            user_delete(user=user)


def _fuzz(schema: schemathesis.BaseSchema, *, sign_out_token, webhook_secret: str = "") -> None:
    """Runs schemathesis' test of every operation (its phases and checks) and reports all failures at once.

    schemathesis' own `from_fixture(...).parametrize()` cannot be used: with pytest 9 it fails on a
    renamed pytest internal (`Function._nodeid`). The per-operation tests it would run are built here
    with the same builder, so the generation phases and checks are schemathesis' own.
    """

    def test(case):
        headers = _signature_headers(case, webhook_secret)
        if case.operation.label == SIGN_OUT:
            headers["Authorization"] = f"Token {sign_out_token()}"
        case.call_and_validate(headers=headers or None)

    failures = []
    operations = 0
    for result in get_all_tests(schema=schema, test_func=test, settings=fuzz_settings, given_kwargs={}):
        if not isinstance(result, Ok):
            failures.append(f"invalid schema: {result.err()}")
            continue
        operation, operation_test = result.ok()
        operations += 1
        try:
            operation_test()
        except (Exception, BaseExceptionGroup) as error:  # every operation runs; all failures are reported
            inner = getattr(error, "exceptions", ())  # hypothesis' FlakyFailure hides what failed
            failures.append("\n".join([f"{operation.label}: {error}", *(f"  {exc!r}" for exc in inner)]))
    assert operations > 0
    assert not failures, "\n\n".join(failures)


def test_platform_api_as_platform_admin(platform_schema, fuzz_stack, django_db_blocker):
    with _sign_out_tokens(django_db_blocker, schema_name=get_public_schema_name(), role=User.Role.PLATFORM_ADMIN) as tokens:
        _fuzz(platform_schema, sign_out_token=tokens)


def test_tenant_api_as_tenant_admin(tenant_admin_schema, fuzz_stack, django_db_blocker):
    with _sign_out_tokens(django_db_blocker, schema_name=fuzz_stack.tenant.schema_name, role=User.Role.ADMIN) as tokens:
        _fuzz(tenant_admin_schema, sign_out_token=tokens, webhook_secret=fuzz_stack.webhook_secret)


def test_tenant_api_as_agent(tenant_agent_schema, fuzz_stack, django_db_blocker):
    with _sign_out_tokens(django_db_blocker, schema_name=fuzz_stack.tenant.schema_name, role=User.Role.AGENT) as tokens:
        _fuzz(tenant_agent_schema, sign_out_token=tokens, webhook_secret=fuzz_stack.webhook_secret)
