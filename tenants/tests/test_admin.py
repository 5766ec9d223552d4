"""The platform admin's tenants: created through `tenant_create` (errors on the form), concurrency through
its service, queue depth shown, a constant number of queries per page."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from core.tests.support import host_of, make_user, PASSWORD
from core.models import User
from tenants.models import Domain, Tenant
from tenants.services import tenant_create


@pytest.fixture
def operator_client(db) -> Client:
    operator = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    client = Client(HTTP_HOST=host_of(None))
    assert client.login(email=operator.email, password=PASSWORD)
    return client


def _add(client, **overrides):
    data = {"name": "Gamma", "slug": "gamma", "admin_email": "boss@gamma.test", "admin_password": PASSWORD, "concurrency": 2}
    return client.post("/admin/tenants/tenant/add/", {**data, **overrides})


def test_adding_a_tenant_provisions_it_like_the_api(operator_client):
    form = operator_client.get("/admin/tenants/tenant/add/")
    assert form.status_code == 200
    assert b'name="admin_password"' in form.content

    response = _add(operator_client)

    assert response.status_code == 302
    tenant = Tenant.objects.get(schema_name="gamma")
    assert (tenant.name, tenant.concurrency) == ("Gamma", 2)
    assert Domain.objects.filter(tenant=tenant, domain=f"gamma.{host_of(None)}", is_primary=True).exists()
    with schema_context("gamma"):
        assert User.objects.get(email="boss@gamma.test").role == User.Role.ADMIN


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"slug": "Bad_Slug"}, "slug"),
        ({"slug": "alpha"}, "slug"),  # taken by a session tenant
        ({"admin_password": "123"}, "admin_password"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_refusals_are_shown_on_the_form_and_nothing_is_written(operator_client, tenant_a, overrides, field):
    response = _add(operator_client, **overrides)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Tenant.objects.filter(schema_name="gamma").exists()


def test_concurrency_is_changed_through_the_service(operator_client, tenant_a, monkeypatch):
    calls = []
    monkeypatch.setattr("tenants.admin.tenant_concurrency_set", lambda *, tenant, workers: calls.append(workers))

    response = operator_client.post(
        f"/admin/tenants/tenant/{tenant_a.pk}/change/",
        {
            "name": tenant_a.name, "concurrency": 5,
            "domains-TOTAL_FORMS": 0, "domains-INITIAL_FORMS": 0, "domains-MIN_NUM_FORMS": 0, "domains-MAX_NUM_FORMS": 1000,
        },  # fmt: skip
    )

    assert response.status_code == 302, response.content
    assert calls == [5]


def test_the_tenant_list_shows_queue_depths_with_constant_queries(operator_client, tenant_a):
    def count() -> tuple[int, object]:
        with CaptureQueriesContext(connection) as queries:
            page = operator_client.get("/admin/tenants/tenant/")
        assert page.status_code == 200
        return len(queries), page

    few, page = count()
    shown = {tenant.schema_name: tenant.queue_depth_value for tenant in page.context["cl"].result_list}
    assert shown["alpha"] == 0
    for index in range(3):
        tenant_create(name=f"T{index}", slug=f"qcount-{index}", admin_email=f"a@q{index}.test", admin_password=PASSWORD)
    many, _ = count()
    assert many == few
