"""The API's one input rule for text (core/parsers.py, core/middleware.py): a NUL character or a lone
surrogate, in a key or a value at any depth of a JSON body, is a 400 whose body renders and never echoes
the text, and so is a NUL in the path or query string; numbers no float holds (1e400) are a 400 too."""

import json

import pytest
from django_tenants.utils import schema_context

from agents.services import agent_create, allocation_settings_get
from core.tests.support import api_client, PASSWORD
from conversations.services import application_create
from core.parsers import json_decode
from rest_framework.exceptions import ParseError

# Bodies as a client sends them: JSON text, where "\ud800" is an escape any JSON decoder turns into a lone
# surrogate and "\u0000" a NUL.
UNSTORABLE_BODIES = {
    "NUL in a value": '{"name": "a\\u0000b", "role": "a\\u0000b", "status": "a\\u0000b"}',
    "NUL in a key": '{"a\\u0000b": 1}',
    "surrogate in a value": '{"name": "\\ud800", "role": "\\ud800", "status": "\\ud800"}',
    "surrogate in a key": '{"\\ud800": 1}',
    "deep in a list": '{"payload": {"a": [1, {"b": ["x", "\\udfff"]}]}}',
    "deep in a key": '{"payload": {"a": [{"\\u0000": 1}]}}',
}


@pytest.mark.parametrize(
    "raw, location",
    [
        ('{"a": "x\\u0000"}', "a"),
        ('{"a": [0, {"b": "\\ud800"}]}', "a[1].b"),
        ('["\\udc00"]', "[0]"),
        ('"\\u0000"', ""),
        ('{"ok": {"\\ud83d": 1}}', "ok"),
    ],
)
def test_the_parser_refuses_unstorable_text_and_names_where_without_echoing_it(raw, location):
    with pytest.raises(ParseError) as error:
        json_decode(raw.encode())
    message = str(error.value.detail)
    assert (f'at "{location}"' in message) if location else ("at " not in message)
    assert "\x00" not in message and not any("\ud800" <= character <= "\udfff" for character in message)


@pytest.mark.parametrize("raw", ['{"x": 1e400}', '{"x": -1e999}', '{"x": Infinity}', '{"x": NaN}'])
def test_the_parser_refuses_numbers_no_float_holds(raw):
    with pytest.raises(ParseError):
        json_decode(raw.encode())


def test_the_parser_keeps_storable_text_as_it_is():
    # a valid surrogate pair is one character (an emoji), and every other control character is storable
    assert json_decode('{"e": "\\ud83d\\ude00", "t": "a\\tb", "u": "\\u00e9", "n": 1e300}'.encode()) == {
        "e": "\U0001f600", "t": "a\tb", "u": "\u00e9", "n": 1e300,
    }  # fmt: skip


@pytest.fixture
def tenant_objects(tenant_a, tenant_a_admin):
    """An application and an agent of tenant A, for the endpoints whose path names one."""
    with schema_context(tenant_a.schema_name):
        application = application_create(name="Support")
        agent = agent_create(email="input-agent@example.test", password=PASSWORD, max_customers=1, is_online=False)
        return {"application": application, "agent": agent}


def _assert_400_renders_without_echo(response) -> None:
    assert response.status_code == 400, response.content
    text = response.content.decode("utf-8")  # it rendered, and as UTF-8
    body = json.loads(text)
    assert body
    assert "\\u0000" not in text and "\\ud800" not in text and "\\udfff" not in text and "\x00" not in text


@pytest.mark.parametrize("body", list(UNSTORABLE_BODIES.values()), ids=list(UNSTORABLE_BODIES))
def test_every_kind_of_tenant_endpoint_refuses_unstorable_text(tenant_a, tenant_a_admin_api, tenant_objects, body):
    application, agent = tenant_objects["application"], tenant_objects["agent"]
    with schema_context(tenant_a.schema_name):
        integration_key = allocation_settings_get().qiscus_integration_key
    qiscus = api_client(tenant=tenant_a)
    qiscus.credentials(HTTP_X_SOCIOMILE_INTEGRATION_KEY=integration_key)
    client = api_client(tenant=tenant_a)
    calls = [
        (tenant_a_admin_api.patch, f"/api/agents/{agent.pk}"),
        (tenant_a_admin_api.post, "/api/applications"),
        (tenant_a_admin_api.patch, f"/api/applications/{application.token}"),
        (tenant_a_admin_api.patch, "/api/scheduler"),
        (tenant_a_admin_api.post, "/api/outbound-messages"),
        (client.post, f"/api/applications/{application.token}/chats"),
        (qiscus.post, "/api/integrations/qiscus/agent-allocation"),
        (qiscus.post, "/api/integrations/qiscus/mark-as-resolved"),
        (api_client(tenant=tenant_a).post, "/api/auth/token"),
    ]
    for call, path in calls:
        _assert_400_renders_without_echo(call(path, data=body, content_type="application/json"))


@pytest.mark.parametrize("body", list(UNSTORABLE_BODIES.values()), ids=list(UNSTORABLE_BODIES))
def test_platform_endpoints_refuse_unstorable_text(tenant_a, platform_api, body):
    for call, path in [
        (platform_api.post, "/api/tenants"),
        (platform_api.post, f"/api/tenants/{tenant_a.id}/messages"),
        (platform_api.put, f"/api/tenants/{tenant_a.id}/config/concurrency"),
    ]:
        _assert_400_renders_without_echo(call(path, data=body, content_type="application/json"))


@pytest.mark.parametrize(
    "payload",
    ['{"x": 1e400}', '{"x": "a\\u0000b"}', '{"x": "\\ud800"}', '{"\\u0000": 1}', '{"x": [{"y": Infinity}]}'],
)
def test_the_platform_event_log_refuses_what_it_could_not_store_and_publishes_nothing(
    tenant_a, platform_api, payload, monkeypatch
):
    import tenants.apis

    published = []
    monkeypatch.setattr(tenants.apis, "tenant_event_schedule", lambda **kwargs: published.append(kwargs))

    response = platform_api.post(
        f"/api/tenants/{tenant_a.id}/messages", data=f'{{"payload": {payload}}}', content_type="application/json"
    )

    _assert_400_renders_without_echo(response)
    assert published == []


def test_a_nul_in_the_path_or_query_string_is_a_400_on_every_host(tenant_a, tenant_a_admin_api, platform_api):
    # an application token, a filter and a search are all looked up in PostgreSQL, which refuses NUL
    tenant_anonymous = api_client(tenant=tenant_a)
    for api, path in [
        (tenant_anonymous, "/api/applications/a%00b/chats"),
        (tenant_a_admin_api, "/api/applications/a%00b"),
        (tenant_a_admin_api, "/api/chats?agent=%00"),
        (tenant_a_admin_api, "/api/tickets?q=a%00"),
        (tenant_a_admin_api, "/api/outbound-messages?status=%00"),
        (tenant_a_admin_api, "/admin/conversations/chat/?q=%00"),
        (platform_api, "/api/tenants?cursor=%00"),
    ]:
        response = api.get(path)
        assert (response.status_code, response.json()) == (400, {"detail": (
            "The request's path or query string holds a NUL character (%00), which cannot be stored."
        )}), path  # fmt: skip


# --- strict JSON types (core/serializers.py) --------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body, field",
    [
        ("post", "/api/applications", {"name": 0}, "name"),
        ("post", "/api/applications", {"name": 1.5}, "name"),
        ("post", "/api/applications", {"name": True}, "name"),
        ("patch", "/api/agents/{agent}", {"is_online": 1}, "is_online"),
        ("patch", "/api/agents/{agent}", {"is_online": "true"}, "is_online"),
        ("patch", "/api/agents/{agent}", {"is_online": 0}, "is_online"),
        ("patch", "/api/agents/{agent}", {"max_customers": "2"}, "max_customers"),
        ("patch", "/api/agents/{agent}", {"max_customers": 2.0}, "max_customers"),
        ("patch", "/api/agents/{agent}", {"max_customers": True}, "max_customers"),
        ("patch", "/api/scheduler", {"batch_size": "5"}, "batch_size"),
        ("patch", "/api/scheduler", {"auth_key": 12345}, "auth_key"),
        ("post", "/api/outbound-messages", {"to": 6281234567890, "content": "x"}, "to"),
    ],
)
def test_json_of_another_type_than_the_schema_says_is_a_400(tenant_a_admin_api, tenant_objects, method, path, body, field):
    # DRF would have taken each one, converted: "name": 0 stored as "0", "is_online": 1 as true, "2" as 2
    path = path.format(agent=tenant_objects["agent"].pk)

    response = getattr(tenant_a_admin_api, method)(path, body, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]


def test_query_parameters_keep_their_string_conversions(tenant_a_admin_api, tenant_objects):
    # a query string holds only strings: "?agent=5" is an agent id, and the type rule is for JSON bodies
    assert tenant_a_admin_api.get(f"/api/chats?agent={tenant_objects['agent'].pk}&status=waiting").status_code == 200
    assert tenant_a_admin_api.get("/api/outbound-messages?status=pending").status_code == 200


@pytest.mark.parametrize("name", ["line\nbreak", "tab\there", "escape\x1b[31m", "bell\x07", "c1\x85", "trailing\n"])
def test_names_with_control_characters_are_a_400(tenant_a, tenant_a_admin_api, platform_api, tenant_objects, name):
    agent = tenant_objects["agent"].pk
    answers = [
        tenant_a_admin_api.post("/api/applications", {"name": name}, format="json"),
        tenant_a_admin_api.patch(f"/api/agents/{agent}", {"name": name}, format="json"),
        platform_api.post(
            "/api/tenants",
            {"name": name, "slug": "ctl", "admin_email": "a@ctl.test", "admin_password": "a-Long-pass-phrase-1"},
            format="json",
        ),
    ]

    assert [(answer.status_code, list(answer.json())) for answer in answers] == [(400, ["name"])] * 3


def test_names_in_the_schema_say_no_control_characters(tenant_a_admin_api):
    import re

    schema = tenant_a_admin_api.get("/api/schema/?format=json").json()
    pattern = schema["components"]["schemas"]["ApplicationNameRequest"]["properties"]["name"]["pattern"]

    assert re.search(pattern, "Support team") and re.search(pattern, "caf\u00e9 \U0001f600")
    assert not any(re.search(pattern, name) for name in ("a\nb", "\t", "   ", "", "x\x7f"))
