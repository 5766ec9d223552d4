import re

import pytest
from django_tenants.utils import schema_context

from core.tests.support import api_client
from conversations.models import Application


def test_admin_creates_an_application_with_token_and_secret(tenant_a, tenant_a_admin_api):
    response = tenant_a_admin_api.post("/api/applications", {"name": "Web widget"})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "name", "chats_count", "team", "webhook_secret", "created_at", "updated_at"}
    assert body["name"] == "Web widget"
    assert body["chats_count"] == 0
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", body["token"])
    assert re.fullmatch(r"[0-9a-f]{64}", body["webhook_secret"])
    with schema_context(tenant_a.schema_name):
        application = Application.objects.get()
        assert (application.token, application.webhook_secret) == (body["token"], body["webhook_secret"])


@pytest.mark.parametrize("name", ["", "x" * 256, None])
def test_bad_name_is_400_and_nothing_is_written(tenant_a, tenant_a_admin_api, name):
    response = tenant_a_admin_api.post("/api/applications", {"name": name})

    assert response.status_code == 400
    assert list(response.json()) == ["name"]
    with schema_context(tenant_a.schema_name):
        assert Application.objects.count() == 0


def test_agents_read_applications_but_do_not_create_or_rename_them(tenant_a, application_a, agent_a_api):
    assert agent_a_api.post("/api/applications", {"name": "Nope"}).status_code == 403
    assert agent_a_api.patch(f"/api/applications/{application_a.token}", {"name": "Nope"}).status_code == 403

    listed = agent_a_api.get("/api/applications")
    assert listed.status_code == 200
    assert [item["token"] for item in listed.json()["data"]] == [application_a.token]
    assert "webhook_secret" not in listed.json()["data"][0]
    with schema_context(tenant_a.schema_name):
        assert list(Application.objects.values_list("name", flat=True)) == ["Widget A"]


def test_admin_renames_with_put_and_patch(tenant_a_admin_api, application_a):
    url = f"/api/applications/{application_a.token}"

    put = tenant_a_admin_api.put(url, {"name": "Renamed"})
    patch = tenant_a_admin_api.patch(url, {"name": "Renamed again"})
    empty_patch = tenant_a_admin_api.patch(url, {})

    assert put.status_code == 200 and put.json()["name"] == "Renamed"
    assert patch.status_code == 200 and patch.json()["name"] == "Renamed again"
    assert empty_patch.status_code == 200 and empty_patch.json()["name"] == "Renamed again"
    assert tenant_a_admin_api.put(url, {}).status_code == 400
    assert set(tenant_a_admin_api.get(url).json()) == {"token", "name", "chats_count", "team", "created_at", "updated_at"}


def test_unknown_token_is_404(tenant_a_admin_api):
    response = tenant_a_admin_api.get("/api/applications/no-such-token")

    assert response.status_code == 404
    assert response.json() == {"detail": "No application with this token."}


def test_applications_need_a_staff_token_of_this_tenant(tenant_a, application_a, tenant_b_admin_api):
    assert api_client(tenant=tenant_a).get("/api/applications").status_code == 401
    # B's admin token is unknown on A's host
    b_token = tenant_b_admin_api._credentials["HTTP_AUTHORIZATION"]
    assert api_client(tenant=tenant_a).get("/api/applications", HTTP_AUTHORIZATION=b_token).status_code == 401
    # and A's application does not exist on B's host
    assert tenant_b_admin_api.get(f"/api/applications/{application_a.token}").status_code == 404
    assert tenant_b_admin_api.get("/api/applications").json()["data"] == []
