"""The platform admin resets a tenant admin (POST /api/tenants/{id}/admin-reset, and the platform admin's
action): the way back into a tenant that has lost its admins."""

import threading

import pytest
from django.db import connections
from django.test import Client
from django_tenants.utils import schema_context
from rest_framework.authtoken.models import Token

from core.tests.support import api_client, host_of, make_user, PASSWORD, token_for
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


@pytest.mark.parametrize(
    "raw",
    [
        b'{"email": "boss\\u0000@alpha.test", "password": "New-pass-4567"}',
        b'{"email": "boss@alpha.test", "password": "New-pass-\\ud800-4567"}',
        b'{"email\\ud800": "boss@alpha.test", "password": "New-pass-4567"}',
        b'{"email": 0, "password": "New-pass-4567"}',
        b'{"email": "boss@alpha.test", "password": ["New-pass-4567"]}',
        b'{"email": "boss@alpha.test", "password": "New-pass-4567"',
    ],
)
def test_hostile_bodies_are_400_and_write_nothing(platform_api, tenant_a, raw):
    response = platform_api.post(f"/api/tenants/{tenant_a.id}/admin-reset", raw, content_type="application/json")

    assert response.status_code == 400
    with schema_context(tenant_a.schema_name):
        assert not User.objects.filter(email__startswith="boss").exists()


def test_forged_ids_and_other_tokens_are_refused(platform_api, tenant_a, tenant_a_admin):
    tenant_admin_on_platform = api_client(token=token_for(tenant_a_admin, tenant=tenant_a))
    body = {"email": "boss@alpha.test", "password": "New-pass-4567"}

    assert platform_api.post("/api/tenants/999999/admin-reset", body).status_code == 404
    assert platform_api.post("/api/tenants/99999999999999999999/admin-reset", body).status_code == 404
    assert tenant_admin_on_platform.post(f"/api/tenants/{tenant_a.id}/admin-reset", body).status_code == 401
    assert api_client().post(f"/api/tenants/{tenant_a.id}/admin-reset", body).status_code == 401
    on_tenant_host = api_client(tenant=tenant_a, token=token_for(tenant_a_admin, tenant=tenant_a))
    assert on_tenant_host.post(f"/api/tenants/{tenant_a.id}/admin-reset", body).status_code == 404
    with schema_context(tenant_a.schema_name):
        assert not User.objects.filter(email="boss@alpha.test").exists()


def test_the_same_reset_twice_at_once_makes_one_admin_and_no_500(make_live_tenant):
    # given a committed tenant and a committed platform admin (the threads each use their own connection)
    tenant = make_live_tenant("reset-twice")
    platform_admin = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN, email=f"root-{tenant.schema_name}@x.test")
    token = token_for(platform_admin, tenant=None)
    barrier, answers = threading.Barrier(2), []

    def reset():
        client = api_client(token=token)
        barrier.wait()
        try:
            response = client.post(f"/api/tenants/{tenant.id}/admin-reset", {"email": "boss@x.test", "password": "New-pass-4567"})
            answers.append(response.status_code)
        finally:
            connections.close_all()

    try:
        threads = [threading.Thread(target=reset) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # then one request made the admin; the other found it made (200) or was told it exists (400): never a 500
        assert sorted(answers) in ([200, 201], [201, 400])
        with schema_context(tenant.schema_name):
            assert User.objects.filter(email="boss@x.test", role=User.Role.ADMIN, is_active=True).count() == 1
    finally:
        # A raw delete: the model's cascade would reach tenant tables (chats) the public schema does not have.
        Token.objects.filter(user_id=platform_admin.id).delete()
        User.objects.filter(id=platform_admin.id)._raw_delete(User.objects.db)
