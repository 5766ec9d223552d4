import pytest
from django.db import connection
from django_tenants.utils import schema_context, schema_exists

from core.tests.support import api_client, PASSWORD
from core.models import User
from core.services import user_delete
from tenants.models import Domain, Tenant

VALID = {"name": "Acme Inc", "slug": "acme", "admin_email": "Boss@Acme.test", "admin_password": "a-long-password-42"}


def test_create_tenant_provisions_schema_domain_and_admin(platform_api):
    # when
    response = platform_api.post("/api/tenants", VALID)

    # then
    assert response.status_code == 201
    body = response.json()
    tenant = Tenant.objects.get(schema_name="acme")
    assert body == {
        "id": tenant.id,
        "name": "Acme Inc",
        "slug": "acme",
        "domain": "acme.localhost",
        "concurrency": 3,
        "created_at": tenant.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert schema_exists("acme")
    assert list(Domain.objects.filter(tenant=tenant).values_list("domain", "is_primary")) == [("acme.localhost", True)]
    with schema_context("acme"):
        assert list(User.objects.values_list("email", "role")) == [("boss@acme.test", "admin")]
    signed_in = api_client(tenant=tenant).post("/api/auth/token", {"email": "boss@acme.test", "password": VALID["admin_password"]})
    assert signed_in.status_code == 200
    assert signed_in.json()["role"] == "admin"


def test_create_tenant_takes_a_concurrency(platform_api):
    response = platform_api.post("/api/tenants", {**VALID, "concurrency": 7})

    assert response.status_code == 201
    assert response.json()["concurrency"] == 7


@pytest.mark.parametrize(
    "slug",
    ["", "Acme", "1acme", "acme-", "ac_me", "ac me", "a" * 41, "public", "www", "pg-x'; drop", "ünï"],
)
def test_bad_slug_is_400_and_nothing_is_written(platform_api, slug):
    tenants_before = Tenant.objects.count()

    response = platform_api.post("/api/tenants", {**VALID, "slug": slug})

    assert response.status_code == 400
    assert "slug" in response.json()
    assert Tenant.objects.count() == tenants_before


def test_duplicate_slug_is_400(platform_api, tenant_a):
    response = platform_api.post("/api/tenants", {**VALID, "slug": tenant_a.schema_name})

    assert response.status_code == 400
    assert response.json() == {"slug": ["A tenant with this slug already exists."]}
    assert Tenant.objects.filter(schema_name=tenant_a.schema_name).count() == 1


def test_weak_admin_password_is_400_and_leaves_no_schema(platform_api):
    response = platform_api.post("/api/tenants", {**VALID, "slug": "weakling", "admin_password": "12345678"})

    assert response.status_code == 400
    assert "password" in response.json()
    assert not Tenant.objects.filter(schema_name="weakling").exists()
    assert not Domain.objects.filter(domain="weakling.localhost").exists()
    assert not schema_exists("weakling")


@pytest.mark.parametrize(
    "field, value",
    [
        ("concurrency", 0), ("concurrency", 65), ("admin_email", "nope"), ("name", ""),
        ("admin_email", "a" * 243 + "@example.test"),  # an email Django's validator passes; 257 > the column's 254
    ],
)  # fmt: skip
def test_invalid_fields_are_400(platform_api, field, value):
    response = platform_api.post("/api/tenants", {**VALID, field: value})

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Tenant.objects.filter(schema_name="acme").exists()


def test_list_is_cursor_paginated_in_creation_order(platform_api, tenant_a, tenant_b):
    first = platform_api.get("/api/tenants?limit=1")
    assert first.status_code == 200
    assert [item["slug"] for item in first.json()["data"]] == ["alpha"]
    assert first.json()["next_cursor"]

    second = platform_api.get(f"/api/tenants?limit=1&cursor={first.json()['next_cursor']}")
    assert [item["slug"] for item in second.json()["data"]] == ["beta"]
    assert second.json()["next_cursor"] is None


def test_bad_cursor_is_400(platform_api):
    response = platform_api.get("/api/tenants?cursor=not-a-cursor")

    assert response.status_code == 400
    assert response.json() == {"cursor": ["Invalid cursor."]}


def test_get_one_tenant_and_unknown_id(platform_api, tenant_a):
    response = platform_api.get(f"/api/tenants/{tenant_a.id}")
    assert response.status_code == 200
    assert response.json()["slug"] == "alpha"
    assert response.json()["domain"] == "alpha.localhost"

    missing = platform_api.get("/api/tenants/999999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No tenant with this id."}


def test_platform_api_needs_a_platform_admin(db, tenant_a):
    assert api_client().get("/api/tenants").status_code == 401
    assert api_client().post("/api/tenants", VALID).status_code == 401
    assert api_client().delete(f"/api/tenants/{tenant_a.id}").status_code == 401
    assert Tenant.objects.filter(id=tenant_a.id).exists()


def test_platform_api_is_not_served_on_tenant_hosts(tenant_a_admin_api):
    assert tenant_a_admin_api.get("/api/tenants").status_code == 404


def test_tenant_lifecycle_create_serve_delete(live_db):
    from core.tests.support import make_user, token_for

    admin = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    platform = api_client(token=token_for(admin, tenant=None))
    try:
        # given a tenant created through the API, whose host serves requests
        created = platform.post("/api/tenants", {**VALID, "slug": "lifecycle"})
        assert created.status_code == 201
        tenant = Tenant.objects.get(schema_name="lifecycle")
        assert api_client(tenant=tenant).get("/health").status_code == 200
        assert api_client(tenant=tenant).post(
            "/api/auth/token", {"email": VALID["admin_email"], "password": VALID["admin_password"]}
        ).status_code == 200

        # when it is deleted
        deleted = platform.delete(f"/api/tenants/{created.json()['id']}")

        # then its host answers 404, its schema and rows are gone
        assert deleted.status_code == 204
        assert api_client(tenant=tenant).get("/health").status_code == 404
        assert not schema_exists("lifecycle")
        assert not Tenant.objects.filter(schema_name="lifecycle").exists()
        assert not Domain.objects.filter(domain="lifecycle.localhost").exists()
        assert platform.get(f"/api/tenants/{created.json()['id']}").status_code == 404
    finally:
        connection.set_schema_to_public()
        for leftover in Tenant.objects.filter(schema_name="lifecycle"):
            leftover.delete(force_drop=True)
        user_delete(user=admin)


def test_admin_password_is_never_echoed(platform_api):
    response = platform_api.post("/api/tenants", VALID)

    assert PASSWORD not in response.content.decode()
    assert VALID["admin_password"] not in response.content.decode()
