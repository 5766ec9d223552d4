"""Who may call what: every endpoint of both URL confs x every wrong credential is refused, and nothing is written.

The endpoints are read from the URL confs themselves (`sociomile.urls_public`, `sociomile.urls_tenants`):
each route and each HTTP method its view handles. Every one of them must be classified in ACCESS below,
or `test_every_endpoint_is_classified` fails: a new URL cannot slip in without saying who may call it.

Refusals, and why these statuses:
- 401 for a missing token, another tenant's token, a platform token on a tenant host and a tenant token on
  the platform host: tokens live in their host's schema, so a foreign token is simply unknown there.
- 403 for a valid token of the wrong role (an agent on an admin endpoint, an admin on the agents-only
  escalation).
- 404 for another tenant's application token in a client path: the application does not exist here.
- 401 for an unsigned channel webhook and for a missing or foreign Qiscus integration key.
"""

import hashlib
import hmac
import json
import re
import uuid

import pytest
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from agents.services import agents_ensure, allocation_settings_get
from core.tests.support import api_client, make_user, token_for
from conversations import inbound
from conversations.models import Chat, Message, Ticket
from conversations.services import application_create
from core.models import User
from core.redis import get_redis
from tenants.models import Tenant
from workspace.models import Label
from workspace.services import canned_response_create, label_create

PLATFORM, TENANT = "platform", "tenant"
URLCONFS = {PLATFORM: "sociomile.urls_public", TENANT: "sociomile.urls_tenants"}
METHODS = ("get", "post", "put", "patch", "delete")
# The Django admin (session login, its own tests in core/tests/test_admin*.py) is not part of the API.
NOT_API_PREFIXES = ("admin/",)

# Who may call each endpoint: (host, "METHOD route") -> access class.
PUBLIC = "public"  # anyone (health, sign-in, schema, docs)
SIGNED_IN = "signed_in"  # any user of this host
PLATFORM_ADMIN = "platform_admin"
TENANT_STAFF = "tenant_staff"  # this tenant's admins and agents
TENANT_ADMIN = "tenant_admin"
TENANT_AGENT = "tenant_agent"  # agents only (escalation)
CLIENT = "client"  # the application token in the path is the credential (device SDKs)
WEBHOOK = "webhook"  # HMAC signature with the application's webhook secret
QISCUS = "qiscus"  # the tenant's integration key in X-Sociomile-Integration-Key
STREAM = "stream"  # a single-use ticket in the query string, read by the ASGI process (refusals: stream/tests)

APP = "api/applications/<str:token>"
CHAT = f"{APP}/chats/<int:number>"
ACCESS = {
    # --- every host
    **{
        (host, endpoint): access
        for host in (PLATFORM, TENANT)
        for endpoint, access in {
            "GET health": PUBLIC,
            "POST api/auth/token": PUBLIC,
            "DELETE api/auth/token": SIGNED_IN,  # signing out
            "GET api/auth/me": SIGNED_IN,
            "GET api/schema/": PUBLIC,
            "GET docs/": PUBLIC,
        }.items()
    },
    # --- platform host
    (PLATFORM, "GET api/tenants"): PLATFORM_ADMIN,
    (PLATFORM, "POST api/tenants"): PLATFORM_ADMIN,
    (PLATFORM, "GET api/tenants/<int:tenant_id>"): PLATFORM_ADMIN,
    (PLATFORM, "DELETE api/tenants/<int:tenant_id>"): PLATFORM_ADMIN,
    (PLATFORM, "PUT api/tenants/<int:tenant_id>/config/concurrency"): PLATFORM_ADMIN,
    (PLATFORM, "GET api/tenants/<int:tenant_id>/messages"): PLATFORM_ADMIN,
    (PLATFORM, "POST api/tenants/<int:tenant_id>/messages"): PLATFORM_ADMIN,
    (PLATFORM, "POST api/tenants/<int:tenant_id>/admin-reset"): PLATFORM_ADMIN,
    (PLATFORM, "GET metrics"): PLATFORM_ADMIN,
    # --- tenant host: applications
    (TENANT, "GET api/applications"): TENANT_STAFF,
    (TENANT, "POST api/applications"): TENANT_ADMIN,
    (TENANT, f"GET {APP}"): TENANT_STAFF,
    (TENANT, f"PUT {APP}"): TENANT_ADMIN,
    (TENANT, f"PATCH {APP}"): TENANT_ADMIN,
    # chats and messages: the client API
    (TENANT, f"GET {APP}/chats"): CLIENT,
    (TENANT, f"POST {APP}/chats"): CLIENT,
    (TENANT, f"GET {CHAT}"): CLIENT,
    (TENANT, f"GET {CHAT}/messages"): CLIENT,
    (TENANT, f"POST {CHAT}/messages"): CLIENT,
    (TENANT, f"GET {CHAT}/messages/search"): CLIENT,
    (TENANT, f"GET {CHAT}/messages/<int:message_number>"): CLIENT,
    (TENANT, f"PUT {CHAT}/messages/<int:message_number>"): CLIENT,
    (TENANT, f"PATCH {CHAT}/messages/<int:message_number>"): CLIENT,
    # the inbox, assignment, escalation, tickets
    (TENANT, f"POST {CHAT}/resolve"): TENANT_STAFF,
    (TENANT, f"POST {CHAT}/assign"): TENANT_ADMIN,
    (TENANT, f"POST {CHAT}/escalate"): TENANT_AGENT,
    (TENANT, "GET api/chats"): TENANT_STAFF,
    (TENANT, "GET api/tickets"): TENANT_STAFF,
    (TENANT, "GET api/tickets/<int:ticket_id>"): TENANT_STAFF,
    (TENANT, "PATCH api/tickets/<int:ticket_id>"): TENANT_ADMIN,
    (TENANT, "POST api/channels/<str:token>/webhook"): WEBHOOK,
    # agents, the queue, Qiscus
    (TENANT, "GET api/agents"): TENANT_STAFF,
    (TENANT, "POST api/agents"): TENANT_ADMIN,
    (TENANT, "GET api/agents/<int:agent_id>"): TENANT_STAFF,
    # An agent may PATCH its own is_online (the view refuses anything else with a 403: agents/tests).
    (TENANT, "PATCH api/agents/<int:agent_id>"): TENANT_STAFF,
    (TENANT, "GET api/queue"): TENANT_STAFF,
    (TENANT, "GET api/integrations/qiscus"): TENANT_ADMIN,
    (TENANT, "POST api/integrations/qiscus/agent-allocation"): QISCUS,
    (TENANT, "POST api/integrations/qiscus/mark-as-resolved"): QISCUS,
    # the outbound scheduler
    (TENANT, "GET api/scheduler"): TENANT_ADMIN,
    (TENANT, "PATCH api/scheduler"): TENANT_ADMIN,
    (TENANT, "POST api/scheduler/start"): TENANT_ADMIN,
    (TENANT, "POST api/scheduler/stop"): TENANT_ADMIN,
    (TENANT, "GET api/outbound-messages"): TENANT_ADMIN,
    (TENANT, "POST api/outbound-messages"): TENANT_ADMIN,
    (TENANT, "GET api/outbound-messages/<uuid:message_id>"): TENANT_ADMIN,
    (TENANT, "POST api/outbound-messages/<uuid:message_id>/retry"): TENANT_ADMIN,
    # outgoing webhooks (events)
    (TENANT, "GET api/webhook-endpoints"): TENANT_ADMIN,
    (TENANT, "POST api/webhook-endpoints"): TENANT_ADMIN,
    (TENANT, "GET api/webhook-endpoints/<uuid:endpoint_id>"): TENANT_ADMIN,
    (TENANT, "PATCH api/webhook-endpoints/<uuid:endpoint_id>"): TENANT_ADMIN,
    (TENANT, "DELETE api/webhook-endpoints/<uuid:endpoint_id>"): TENANT_ADMIN,
    (TENANT, "POST api/webhook-endpoints/<uuid:endpoint_id>/rotate-secret"): TENANT_ADMIN,
    (TENANT, "GET api/webhook-endpoints/<uuid:endpoint_id>/deliveries"): TENANT_ADMIN,
    (TENANT, "POST api/webhook-deliveries/<uuid:delivery_id>/redeliver"): TENANT_ADMIN,
    # reports
    (TENANT, "GET api/reports/summary"): TENANT_ADMIN,
    # the real-time stream
    (TENANT, "POST api/stream/ticket"): TENANT_STAFF,
    (TENANT, "GET api/stream"): STREAM,
    # routing: teams, SLA policies, transfer (an agent only its own chats: OWNERSHIP_REFUSALS)
    (TENANT, "GET api/teams"): TENANT_STAFF,
    (TENANT, "POST api/teams"): TENANT_ADMIN,
    (TENANT, "GET api/teams/<int:team_id>"): TENANT_STAFF,
    (TENANT, "PATCH api/teams/<int:team_id>"): TENANT_ADMIN,
    (TENANT, "DELETE api/teams/<int:team_id>"): TENANT_ADMIN,
    (TENANT, "GET api/sla-policies"): TENANT_STAFF,
    (TENANT, "POST api/sla-policies"): TENANT_ADMIN,
    (TENANT, "GET api/sla-policies/<int:policy_id>"): TENANT_STAFF,
    (TENANT, "PATCH api/sla-policies/<int:policy_id>"): TENANT_ADMIN,
    (TENANT, "DELETE api/sla-policies/<int:policy_id>"): TENANT_ADMIN,
    (TENANT, f"POST {CHAT}/transfer"): TENANT_STAFF,
    # the agent workspace: labels, canned responses (private notes ride on POST .../messages: OWNERSHIP_REFUSALS)
    (TENANT, "GET api/labels"): TENANT_STAFF,
    (TENANT, "POST api/labels"): TENANT_ADMIN,
    (TENANT, f"POST {CHAT}/labels/<int:label_id>"): TENANT_STAFF,
    (TENANT, f"DELETE {CHAT}/labels/<int:label_id>"): TENANT_STAFF,
    (TENANT, "GET api/canned-responses"): TENANT_STAFF,
    (TENANT, "POST api/canned-responses"): TENANT_ADMIN,
    (TENANT, "PATCH api/canned-responses/<int:canned_response_id>"): TENANT_ADMIN,
    (TENANT, "DELETE api/canned-responses/<int:canned_response_id>"): TENANT_ADMIN,
    # contacts and the audit log (privacy)
    (TENANT, "GET api/contacts"): TENANT_STAFF,
    (TENANT, "GET api/contacts/<path:customer_id>"): TENANT_STAFF,
    (TENANT, "PATCH api/contacts/<path:customer_id>"): TENANT_STAFF,
    (TENANT, "DELETE api/contacts/<path:customer_id>"): TENANT_ADMIN,
    (TENANT, "GET api/contacts/<path:customer_id>/export"): TENANT_ADMIN,
    (TENANT, "GET api/audit-log"): TENANT_ADMIN,
}

# The wrong credentials each access class must refuse, and with which status.
# Credentials: none, a token of the other tenant, a platform admin's token on a tenant host, a tenant admin's
# token on the platform host, an agent's / an admin's token of this tenant, the other tenant's application.
REFUSALS = {
    PUBLIC: {},
    SIGNED_IN: {"none": 401, "other_tenant_token": 401, "platform_token": 401, "tenant_token": 401},
    PLATFORM_ADMIN: {"none": 401, "tenant_token": 401},
    TENANT_STAFF: {"none": 401, "other_tenant_token": 401, "platform_token": 401},
    TENANT_ADMIN: {"none": 401, "other_tenant_token": 401, "platform_token": 401, "agent_token": 403},
    TENANT_AGENT: {"none": 401, "other_tenant_token": 401, "platform_token": 401, "admin_token": 403},
    CLIENT: {"other_tenant_token": 401, "platform_token": 401, "other_tenant_application": 404},
    WEBHOOK: {"none": 401, "other_tenant_application": 404},
    QISCUS: {"none": 401, "other_tenant_integration_key": 401},
    STREAM: {},
}

# One body for every write: it would be valid input for most endpoints, so a missing check writes something.
WRITE_BODY = {
    "name": "Matrix", "slug": "matrix-slug", "admin_email": "matrix@example.test", "admin_password": "Matrix-pass-123",
    "workers": 2, "payload": {"k": "v"}, "customer_id": "matrix-customer", "body": "matrix", "message": "matrix",
    "title": "Matrix", "status": "closed", "agent_id": 1, "email": "matrix-agent@example.test",
    "password": "Matrix-pass-123", "is_online": True, "to": "+6281234567890", "content": "matrix",
    "interval_seconds": 5, "room_id": "matrix-room", "service": {"room_id": "matrix-room"}, "shortcut": "matrix2",
    "color": "#000000",
}  # fmt: skip


def endpoints(host: str) -> list[tuple[str, str]]:
    """(METHOD, route) of every API endpoint of the host's URL conf, walked from its resolver."""

    def walk(patterns, prefix: str):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if route.startswith(NOT_API_PREFIXES):
                continue
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
                if view_class is None:  # a function view: GET
                    yield "GET", route
                else:
                    yield from ((method.upper(), route) for method in METHODS if hasattr(view_class, method))

    return sorted(set(walk(get_resolver(URLCONFS[host]).url_patterns, "")))


def test_every_endpoint_is_classified():
    found = {(host, f"{method} {route}") for host in URLCONFS for method, route in endpoints(host)}

    assert sorted(found - ACCESS.keys()) == [], "new endpoints: classify them in ACCESS (docs/quality.md)"
    assert sorted(ACCESS.keys() - found) == [], "ACCESS names endpoints that no longer exist"


# --- the refusals ----------------------------------------------------------------------------------------------


def _path(route: str, values: dict) -> str:
    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", lambda match: str(values[match.group(2)]), route)


def _table_counts() -> dict[str, int]:
    schemas = [get_public_schema_name(), *Tenant.objects.exclude(schema_name=get_public_schema_name()).values_list("schema_name", flat=True)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema = ANY(%s) ORDER BY 1, 2",
            [schemas],
        )
        tables = cursor.fetchall()
        query = " UNION ALL ".join(f"SELECT '{schema}.{table}', count(*) FROM \"{schema}\".\"{table}\"" for schema, table in tables)
        cursor.execute(query)
        return dict(cursor.fetchall())


def _redis_state(schemas: list[str]) -> dict[str, bytes]:
    redis = get_redis()
    state = {}
    for schema in schemas:
        for pattern in (f"sociomile:{schema}:*", f"tenant.{schema}*"):
            for key in redis.scan_iter(pattern):
                if b":slots" not in key:  # leases and limits belong to workers, not to requests
                    state[key.decode()] = redis.dump(key)
    return state


@pytest.fixture
def matrix(tenant_a, tenant_b, platform_token):
    """Tenant A is the host under test; tenant B provides the foreign credentials."""
    with schema_context(tenant_a.schema_name):
        application = application_create(name="Matrix A")
        allocation_settings_get()  # the lazily made settings row exists before the snapshot
        # rows for the workspace's paths to name: a refusal must leave them as they are
        label = label_create(name="matrix")
        canned = canned_response_create(shortcut="matrix", body="Hello {{customer_id}}")
    with schema_context(tenant_b.schema_name):
        foreign = application_create(name="Matrix B")
        foreign_key = allocation_settings_get().qiscus_integration_key
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    other_admin = make_user(tenant=tenant_b, role=User.Role.ADMIN)
    return {
        "tenant": tenant_a,
        "other_tenant": tenant_b,
        "values": {"token": application.token, "number": 1, "message_number": 1, "ticket_id": 1,
                   "agent_id": agent.id, "message_id": uuid.uuid4(), "tenant_id": tenant_a.id,
                   "endpoint_id": uuid.uuid4(), "delivery_id": uuid.uuid4(), "team_id": 1, "policy_id": 1,
                   "label_id": label.id, "canned_response_id": canned.id, "customer_id": "matrix/customer"},  # fmt: skip
        "foreign_values": {"token": foreign.token},
        "foreign_secret": foreign.webhook_secret,
        "tokens": {
            "admin_token": token_for(admin, tenant=tenant_a),
            "agent_token": token_for(agent, tenant=tenant_a),
            "other_tenant_token": token_for(other_admin, tenant=tenant_b),
            "platform_token": platform_token,
            "tenant_token": token_for(admin, tenant=tenant_a),
        },
        "foreign_integration_key": foreign_key,
    }


def _refused_request(matrix: dict, host: str, method: str, route: str, credential: str):
    tenant = matrix["tenant"] if host == TENANT else None
    values = dict(matrix["values"])
    headers = {}
    token = matrix["tokens"].get(credential)
    body = json.dumps(WRITE_BODY).encode()
    if credential == "other_tenant_application":
        values.update(matrix["foreign_values"])
        # Signed with its own secret: only the host (another tenant's) is wrong.
        digest = hmac.new(matrix["foreign_secret"].encode(), body, hashlib.sha256).hexdigest()
        headers[f"HTTP_{inbound.SIGNATURE_HEADER.upper().replace('-', '_')}"] = f"sha256={digest}"
    if credential == "other_tenant_integration_key":
        headers["HTTP_X_SOCIOMILE_INTEGRATION_KEY"] = matrix["foreign_integration_key"]
    client = api_client(tenant=tenant, token=token)
    send = getattr(client, method.lower())
    if method == "GET":
        return send(_path(route, values), **headers)
    return send(_path(route, values), data=body, content_type="application/json", **headers)


def test_every_endpoint_refuses_every_wrong_credential_and_writes_nothing(matrix):
    schemas = [matrix["tenant"].schema_name, matrix["other_tenant"].schema_name]
    cases = [
        (host, method, route, credential, status)
        for host in URLCONFS
        for method, route in endpoints(host)
        if (host, f"{method} {route}") in ACCESS  # the others fail test_every_endpoint_is_classified
        for credential, status in REFUSALS[ACCESS[(host, f"{method} {route}")]].items()
        if not (host == PLATFORM and credential in ("other_tenant_token", "platform_token"))
        and not (host == TENANT and credential == "tenant_token")
    ]
    counts_before, redis_before = _table_counts(), _redis_state(schemas)

    wrong = []
    for host, method, route, credential, status in cases:
        response = _refused_request(matrix, host, method, route, credential)
        body = response.json() if response.get("Content-Type", "").startswith("application/json") else None
        if response.status_code != status or not (isinstance(body, dict) and "detail" in body):
            wrong.append(f"{host} {method} /{route} with {credential}: {response.status_code} {body!r}, expected {status}")
    connection.set_schema_to_public()

    counts_after, redis_after = _table_counts(), _redis_state(schemas)
    written = {table: (counts_before.get(table), count) for table, count in counts_after.items() if counts_before.get(table) != count}
    redis_written = sorted(key for key in redis_before.keys() | redis_after.keys() if redis_before.get(key) != redis_after.get(key))
    assert len(cases) > 100  # the matrix is not silently empty
    assert {"wrong answers": wrong, "rows written": written, "redis keys written": redis_written} == {
        "wrong answers": [], "rows written": {}, "redis keys written": []
    }  # fmt: skip


# --- the right role, someone else's object ----------------------------------------------------------------------
# One access check per resource (conversations.access, agents.services.agent_access_check), used by every view
# and admin action: the chat's assigned agent or an admin acts on a chat; a message is edited only by its author's
# side (the client for a customer's, the authoring agent or an admin for an agent's); an agent changes only its
# own is_online.

OWNED_CHAT = f"{APP}/chats/1"


@pytest.fixture
def ownership(tenant_a):
    """An assigned chat of agent "owner", with a customer's message (1) and the owner's reply (2)."""
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    owner = make_user(tenant=tenant_a, role=User.Role.AGENT)
    other = make_user(tenant=tenant_a, role=User.Role.AGENT)
    with schema_context(tenant_a.schema_name):
        application = application_create(name="Ownership")
        agents_ensure()
        chat = Chat.objects.create(application=application, number=1, status=Chat.Status.ASSIGNED, customer_id="c1",
                                   assigned_agent=owner, assigned_at=timezone.now())  # fmt: skip
        Message.objects.create(chat=chat, number=1, body="customer wrote", sender=Message.Sender.CUSTOMER)
        Message.objects.create(chat=chat, number=2, body="owner replied", sender=Message.Sender.AGENT, author=owner)
        allocation_settings_get()
        label_create(name="vip")  # named in the routes as {label}
        canned_response_create(shortcut="hello", body="Hello {{customer_id}}")
    tokens = {"client": None, **{name: token_for(user, tenant=tenant_a) for name, user in
                                 (("admin", admin), ("owner", owner), ("other", other))}}  # fmt: skip
    return {"tenant": tenant_a, "token": application.token, "tokens": tokens, "owner": owner, "other": other}


def _owned_path(ownership, route: str) -> str:
    with schema_context(ownership["tenant"].schema_name):
        label_id = Label.objects.get(name="vip").id
    return "/" + route.replace("<str:token>", ownership["token"]).format(
        owner=ownership["owner"].id, other=ownership["other"].id, label=label_id
    )


# (method, route, credential, body, expected status)
OWNERSHIP_REFUSALS = [
    ("POST", f"{OWNED_CHAT}/escalate", "other", {"title": "Mine now"}, 403),
    ("POST", f"{OWNED_CHAT}/resolve", "other", {}, 403),
    ("POST", f"{OWNED_CHAT}/messages", "other", {"body": "not my chat"}, 403),
    ("PATCH", f"{OWNED_CHAT}/messages/2", "client", {"body": "rewritten by the client"}, 403),
    ("PUT", f"{OWNED_CHAT}/messages/2", "client", {"body": "rewritten by the client"}, 403),
    ("PATCH", f"{OWNED_CHAT}/messages/2", "other", {"body": "rewritten by another agent"}, 403),
    ("PATCH", f"{OWNED_CHAT}/messages/1", "owner", {"body": "rewritten by the agent"}, 403),
    ("PATCH", f"{OWNED_CHAT}/messages/1", "admin", {"body": "rewritten by an admin"}, 403),
    ("PATCH", "api/agents/{owner}", "other", {"is_online": True}, 403),
    ("PATCH", "api/agents/{other}", "other", {"max_customers": 50}, 403),
    ("POST", f"{OWNED_CHAT}/assign", "owner", {"agent_id": 1}, 403),
    ("POST", f"{OWNED_CHAT}/transfer", "other", {"agent_id": 1, "note": "taking it"}, 403),
    # the agent workspace (issue 25): notes and canned responses are staff's; labels follow the reply rule
    ("POST", f"{OWNED_CHAT}/messages", "client", {"body": "a note?", "private": True}, 403),
    ("POST", f"{OWNED_CHAT}/messages", "client", {"canned": "hello"}, 403),
    ("POST", f"{OWNED_CHAT}/messages", "other", {"body": "a note on another's chat", "private": True}, 403),
    ("POST", f"{OWNED_CHAT}/messages", "other", {"canned": "hello"}, 403),
    ("POST", f"{OWNED_CHAT}/labels/{{label}}", "other", {}, 403),
    ("DELETE", f"{OWNED_CHAT}/labels/{{label}}", "other", {}, 403),
]


def test_staff_and_clients_are_refused_what_belongs_to_someone_else_and_nothing_is_written(ownership):
    schemas = [ownership["tenant"].schema_name]
    counts_before, redis_before = _table_counts(), _redis_state(schemas)

    wrong = []
    for method, route, credential, body, status in OWNERSHIP_REFUSALS:
        client = api_client(tenant=ownership["tenant"], token=ownership["tokens"][credential])
        response = getattr(client, method.lower())(_owned_path(ownership, route), data=body, format="json")
        if response.status_code != status or "detail" not in response.json():
            wrong.append(f"{method} {route} as {credential}: {response.status_code} {response.json()!r}, expected {status}")
    connection.set_schema_to_public()

    counts_after, redis_after = _table_counts(), _redis_state(schemas)
    written = {table: (counts_before.get(table), count) for table, count in counts_after.items() if counts_before.get(table) != count}
    redis_written = sorted(key for key in redis_before.keys() | redis_after.keys() if redis_before.get(key) != redis_after.get(key))
    with schema_context(ownership["tenant"].schema_name):
        bodies = list(Message.objects.order_by("number").values_list("body", flat=True))
        chat = Chat.objects.get()
    assert {"wrong answers": wrong, "rows written": written, "redis keys written": redis_written} == {
        "wrong answers": [], "rows written": {}, "redis keys written": []
    }  # fmt: skip
    assert bodies == ["customer wrote", "owner replied"]
    assert (chat.status, chat.assigned_agent_id) == (Chat.Status.ASSIGNED, ownership["owner"].id)


def test_the_owners_side_may_do_what_the_others_may_not(ownership):
    def send(credential, method, route, body):
        client = api_client(tenant=ownership["tenant"], token=ownership["tokens"][credential])
        return getattr(client, method.lower())(_owned_path(ownership, route), data=body, format="json").status_code

    # the client edits its customer's message; the authoring agent and an admin edit the agent's reply
    assert send("client", "PATCH", f"{OWNED_CHAT}/messages/1", {"body": "customer fixed a typo"}) == 200
    assert send("owner", "PATCH", f"{OWNED_CHAT}/messages/2", {"body": "owner fixed a typo"}) == 200
    assert send("admin", "PUT", f"{OWNED_CHAT}/messages/2", {"body": "admin fixed it"}) == 200
    # another agent's escalation was refused, so the assigned agent's own works (before the fix: 409)
    assert send("other", "POST", f"{OWNED_CHAT}/escalate", {"title": "Mine now"}) == 403
    assert send("owner", "POST", f"{OWNED_CHAT}/escalate", {"title": "Refund"}) == 201
    assert send("owner", "PATCH", "api/agents/{owner}", {"is_online": True}) == 200
    # the owner labels its chat, an admin takes the label off (the owner's notes: workspace/tests, whose drain
    # runs in-process; here a created message would send a real drain task to the tenant's queue)
    assert send("owner", "POST", f"{OWNED_CHAT}/labels/{{label}}", {}) == 200
    assert send("admin", "DELETE", f"{OWNED_CHAT}/labels/{{label}}", {}) == 200
    with schema_context(ownership["tenant"].schema_name):
        assert list(Message.objects.order_by("number").values_list("body", flat=True)) == ["customer fixed a typo", "admin fixed it"]
        assert Ticket.objects.get().created_by_id == ownership["owner"].id


def test_the_tenant_admin_edits_an_agents_reply_but_not_a_customers_message(ownership):
    # given an admin signed in to the tenant's Django admin, on the chat's page
    from django.test import Client

    from core.tests.support import host_of, PASSWORD

    tenant = ownership["tenant"]
    with schema_context(tenant.schema_name):
        admin = User.objects.filter(role=User.Role.ADMIN).order_by("-id").first()
        chat_id = Chat.objects.get().id
    client = Client(HTTP_HOST=host_of(tenant))
    assert client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"}).status_code == 302

    page = client.get(f"/admin/conversations/chat/{chat_id}/change/")

    # then the customer's message body is shown disabled (a posted value is ignored), the agent's reply is editable
    forms = {form.instance.number: form for form in page.context["inline_admin_formsets"][0].formset.forms}
    assert forms[1].fields["body"].disabled is True
    assert forms[2].fields["body"].disabled is False
