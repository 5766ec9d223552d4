"""/api/agents: admins create and edit, agents switch themselves on- and offline, tenants stay apart."""

import threading

import pytest
from django.db import connections
from django_tenants.utils import schema_context

from agents.models import Agent
from core.tests.support import api_client, make_user, PASSWORD, token_for
from core.models import User


def _counts(tenant) -> tuple[int, int]:
    with schema_context(tenant.schema_name):
        return User.objects.count(), Agent.objects.count()


def test_an_admin_creates_an_agent_which_can_sign_in(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.post(
        "/api/agents", {"email": "Dewi@Example.test", "name": "Dewi", "password": PASSWORD, "max_customers": 3}
    )

    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": body["id"],
        "email": "dewi@example.test",
        "name": "Dewi",
        "role": "agent",
        "is_online": False,
        "max_customers": 3,
        "active_chats": 0,
    }
    with schema_context(tenant_a.schema_name):
        assert Agent.objects.get(pk=body["id"]).user.email == "dewi@example.test"
    token = api_client(tenant=tenant_a).post("/api/auth/token", {"email": "dewi@example.test", "password": PASSWORD})
    assert token.json()["role"] == "agent"
    assert tenant_a_admin_api.get(f"/api/agents/{body['id']}").json() == body


def test_max_customers_defaults_to_the_tenant_setting(tenant_a, tenant_a_admin_api):
    from agents.services import allocation_settings_get

    assert tenant_a_admin_api.post("/api/agents", {"email": "a@x.test", "password": PASSWORD}).json()["max_customers"] == 2
    with schema_context(tenant_a.schema_name):
        settings_row = allocation_settings_get()
        settings_row.default_max_customers = 5
        settings_row.save()
    created = tenant_a_admin_api.post("/api/agents", {"email": "b@x.test", "password": PASSWORD, "role": "admin"}).json()
    assert (created["max_customers"], created["role"]) == (5, "admin")


@pytest.mark.parametrize(
    "payload, errors",
    [
        ({"email": "not-an-email", "password": PASSWORD}, {"email"}),
        ({"email": "x@x.test", "password": "123"}, {"password"}),
        ({"email": "x@x.test"}, {"password"}),
        ({"email": "x@x.test", "password": PASSWORD, "role": "platform_admin"}, {"role"}),
        ({"email": "x@x.test", "password": PASSWORD, "max_customers": -1}, {"max_customers"}),
        ({"email": "x@x.test", "password": PASSWORD, "max_customers": "many"}, {"max_customers"}),
        ({"email": "x@x.test", "password": PASSWORD, "nickname": "x"}, {"nickname"}),
        # valid for Django's EmailValidator (up to 320), too long for the column (254)
        ({"email": "a" * 243 + "@example.test", "password": PASSWORD}, {"email"}),
    ],
)
def test_invalid_agents_are_refused_and_nothing_is_written(tenant_a, tenant_a_admin_api, payload, errors):
    before = _counts(tenant_a)

    response = tenant_a_admin_api.post("/api/agents", payload)

    assert response.status_code == 400
    assert set(response.json()) == errors
    assert _counts(tenant_a) == before


def test_a_taken_email_is_refused(tenant_a, tenant_a_admin, tenant_a_admin_api):
    before = _counts(tenant_a)
    response = tenant_a_admin_api.post("/api/agents", {"email": tenant_a_admin.email.upper(), "password": PASSWORD})
    assert (response.status_code, list(response.json())) == (400, ["email"])
    assert _counts(tenant_a) == before


def test_one_email_created_by_many_admins_at_once_is_one_agent_and_400s(make_live_tenant):
    # The service checks the email, hashes the password (~0.1 s), then inserts: the check alone lets every
    # request of a simultaneous burst through, and the unique constraint must answer for them as a 400.
    tenant = make_live_tenant("same-email")
    with schema_context(tenant.schema_name):
        admin_token = token_for(User.objects.get(role=User.Role.ADMIN), tenant=tenant)
    start = threading.Barrier(6)
    answers = []

    def create():
        client = api_client(tenant=tenant, token=admin_token)
        start.wait()
        try:
            response = client.post("/api/agents", {"email": "twin@example.test", "password": PASSWORD})
            answers.append((response.status_code, response.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(status for status, _ in answers) == [201, 400, 400, 400, 400, 400]
    assert [body for status, body in answers if status == 400] == [{"email": ["A user with this email already exists."]}] * 5
    with schema_context(tenant.schema_name):
        assert User.objects.filter(email="twin@example.test").count() == Agent.objects.filter(user__email="twin@example.test").count() == 1


def test_agents_cannot_create_or_edit_others_or_their_own_capacity(tenant_a, tenant_a_admin_api, make_agent):
    me = make_agent(max_customers=2, is_online=False)
    colleague = make_agent(max_customers=2, is_online=False)
    before = _counts(tenant_a)

    assert me.api.post("/api/agents", {"email": "new@x.test", "password": PASSWORD}).status_code == 403
    assert me.api.patch(f"/api/agents/{colleague.pk}", {"is_online": True}).status_code == 403
    assert me.api.patch(f"/api/agents/{me.pk}", {"max_customers": 9}).status_code == 403
    assert me.api.patch(f"/api/agents/{me.pk}", {"is_online": True, "name": "Boss"}).status_code == 403
    assert me.api.get("/api/integrations/qiscus").status_code == 403

    assert _counts(tenant_a) == before
    with schema_context(tenant_a.schema_name):
        assert list(
            Agent.objects.filter(pk__in=[me.pk, colleague.pk]).order_by("pk").values_list("is_online", "max_customers")
        ) == [
            (False, 2),
            (False, 2),
        ]
    own = me.api.patch(f"/api/agents/{me.pk}", {"is_online": True})
    assert (own.status_code, own.json()["is_online"]) == (200, True)


def test_an_admin_edits_any_agent(tenant_a, tenant_a_admin_api, make_agent):
    agent = make_agent(max_customers=2, is_online=False)

    response = tenant_a_admin_api.patch(
        f"/api/agents/{agent.pk}", {"name": "Renamed", "max_customers": 4, "is_online": True, "role": "admin"}
    )

    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("name", "max_customers", "is_online", "role")} == {
        "name": "Renamed",
        "max_customers": 4,
        "is_online": True,
        "role": "admin",
    }
    bad = tenant_a_admin_api.patch(f"/api/agents/{agent.pk}", {"max_customers": 1001})
    assert (bad.status_code, list(bad.json())) == (400, ["max_customers"])
    assert tenant_a_admin_api.patch("/api/agents/999999", {"is_online": True}).status_code == 404


def test_the_list_includes_staff_made_elsewhere_with_their_active_chats(
    tenant_a, tenant_a_admin, tenant_a_admin_api, make_agent
):
    agent = make_agent(max_customers=1)
    elsewhere = make_user(tenant=tenant_a, role=User.Role.AGENT)  # not through the agents API

    response = tenant_a_admin_api.get("/api/agents")

    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["data"]}
    assert {agent.pk, tenant_a_admin.id, elsewhere.id} <= set(rows)
    assert (rows[elsewhere.id]["is_online"], rows[elsewhere.id]["max_customers"], rows[elsewhere.id]["active_chats"]) == (
        False,
        2,
        0,
    )
    assert agent.api.get(f"/api/agents/{elsewhere.id}").status_code == 200


def test_other_tenants_tokens_and_anonymous_requests_are_refused(tenant_a, tenant_b, make_agent):
    agent = make_agent()
    outsider = make_user(tenant=tenant_b, role=User.Role.ADMIN)
    foreign = api_client(tenant=tenant_a, token=token_for(outsider, tenant=tenant_b))
    anonymous = api_client(tenant=tenant_a)

    for client in (foreign, anonymous):
        assert client.get("/api/agents").status_code == 401
        assert client.post("/api/agents", {"email": "z@x.test", "password": PASSWORD}).status_code == 401
        assert client.get(f"/api/agents/{agent.pk}").status_code == 401
        assert client.patch(f"/api/agents/{agent.pk}", {"is_online": False}).status_code == 401
        assert client.get("/api/queue").status_code == 401
        assert client.get("/api/integrations/qiscus").status_code == 401
