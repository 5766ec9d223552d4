"""The platform admin resets a tenant admin (POST /api/tenants/{id}/admin-reset, and the platform admin's
action): the way back into a tenant that has lost its admins."""

import pytest
from django.test import Client
from django_tenants.utils import schema_context
from rest_framework.authtoken.models import Token

from conftest import PASSWORD, api_client, host_of, make_user, token_for
from core.models import User


def _reset(platform_api, tenant, **body):
    return platform_api.post(f"/api/tenants/{tenant.id}/admin-reset", {"email": "boss@alpha.test", "password": "New-pass-4567", **body})


def test_a_new_admin_is_created_and_can_sign_in(platform_api, tenant_a):
    response = _reset(platform_api, tenant_a)

    assert response.status_code == 201
    with schema_context(tenant_a.schema_name):
        user = User.objects.get(email="boss@alpha.test")
    assert response.json() == {"id": user.id, "email": "boss@alpha.test", "role": "admin", "is_active": True}
    signed_in = api_client(tenant=tenant_a).post("/api/auth/token", {"email": "boss@alpha.test", "password": "New-pass-4567"})
    assert (signed_in.status_code, signed_in.json()["role"]) == (200, "admin")


def test_an_existing_demoted_inactive_user_is_restored_and_its_token_revoked(platform_api, tenant_a):
    # given the former admin was demoted and deactivated, and holds a token
    former = make_user(tenant=tenant_a, role=User.Role.AGENT, email="boss@alpha.test")
    token = token_for(former, tenant=tenant_a)
    with schema_context(tenant_a.schema_name):
        User.objects.filter(id=former.id).update(is_active=False)

    response = _reset(platform_api, tenant_a, email="Boss@ALPHA.test")

    assert response.status_code == 200
    assert response.json() == {"id": former.id, "email": "boss@alpha.test", "role": "admin", "is_active": True}
    with schema_context(tenant_a.schema_name):
        user = User.objects.get(id=former.id)
        assert (user.role, user.is_active, user.is_staff, user.is_superuser) == ("admin", True, True, True)
        assert user.check_password("New-pass-4567")
        assert not Token.objects.filter(key=token).exists()


@pytest.mark.parametrize(
    "body, field",
    [({"password": "123"}, "password"), ({"email": "not-an-email"}, "email"), ({"password": None}, "password")],
)
def test_bad_input_is_400_and_writes_nothing(platform_api, tenant_a, body, field):
    existing = make_user(tenant=tenant_a, role=User.Role.AGENT, email="boss@alpha.test")

    response = _reset(platform_api, tenant_a, **body)

    assert response.status_code == 400
    assert field in response.json()
    with schema_context(tenant_a.schema_name):
        user = User.objects.get(email="boss@alpha.test")
        assert (user.id, user.role, user.check_password(PASSWORD)) == (existing.id, "agent", True)


def test_an_unknown_tenant_is_404(platform_api):
    assert platform_api.post("/api/tenants/999999/admin-reset", {"email": "a@b.test", "password": "New-pass-4567"}).status_code == 404


def test_the_platform_admin_action_resets_an_admin(tenant_a, db):
    operator = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    client = Client(HTTP_HOST=host_of(None))
    assert client.login(email=operator.email, password=PASSWORD)
    action = {"action": "admin_reset", "_selected_action": [tenant_a.id]}

    page = client.post("/admin/tenants/tenant/", action)
    weak = client.post("/admin/tenants/tenant/", {**action, "apply": "1", "email": "boss@alpha.test", "password": "123"})
    done = client.post("/admin/tenants/tenant/", {**action, "apply": "1", "email": "boss@alpha.test", "password": "New-pass-4567"})

    assert page.status_code == 200 and b'name="password"' in page.content
    assert weak.status_code == 200 and b"errorlist" in weak.content
    assert done.status_code == 302
    with schema_context(tenant_a.schema_name):
        user = User.objects.get(email="boss@alpha.test")
        assert (user.role, user.is_active, user.check_password("New-pass-4567")) == ("admin", True, True)
