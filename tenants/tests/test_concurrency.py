"""`PUT /api/tenants/{id}/config/concurrency` and the runtime fields of `GET /api/tenants/{id}`.

The cap itself, fairness, deletion and shutdown run through real workers in test_workers.py."""

import pytest

from core.tests.support import api_client, token_for
from core.redis import get_redis
from tenants.models import Tenant


def test_put_concurrency_stores_it_and_publishes_the_limit(platform_api, tenant_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = platform_api.put(f"/api/tenants/{tenant_a.id}/config/concurrency", {"workers": 7})

    assert response.status_code == 200
    assert get_redis().get(f"sociomile:{tenant_a.schema_name}:slots:limit") == b"7"
    assert response.json() == {"workers": 7}
    tenant_a.refresh_from_db()
    assert tenant_a.concurrency == 7
    assert platform_api.get(f"/api/tenants/{tenant_a.id}").json()["concurrency"] == 7


@pytest.mark.parametrize(
    "body",
    [{"workers": 0}, {"workers": 65}, {"workers": "4"}, {"workers": 2.5}, {"workers": True}, {"workers": None}, {},
     {"concurrency": 4}],
)  # fmt: skip
def test_put_concurrency_rejects_bad_values_and_changes_nothing(platform_api, tenant_a, body):
    before = Tenant.objects.get(id=tenant_a.id).concurrency

    response = platform_api.put(f"/api/tenants/{tenant_a.id}/config/concurrency", body)

    assert response.status_code == 400
    assert list(response.json()) == ["workers"]
    assert Tenant.objects.get(id=tenant_a.id).concurrency == before


def test_put_concurrency_needs_a_platform_admin(tenant_a, tenant_a_admin):
    url = f"/api/tenants/{tenant_a.id}/config/concurrency"
    tenant_token = token_for(tenant_a_admin, tenant=tenant_a)

    assert api_client().put(url, {"workers": 9}).status_code == 401
    assert api_client(token=tenant_token).put(url, {"workers": 9}).status_code == 401
    assert api_client(tenant=tenant_a, token=tenant_token).put(url, {"workers": 9}).status_code == 404
    assert Tenant.objects.get(id=tenant_a.id).concurrency == 3


def test_put_concurrency_of_an_unknown_tenant_is_404(platform_api):
    response = platform_api.put("/api/tenants/999999/config/concurrency", {"workers": 2})

    assert response.status_code == 404


def test_tenant_detail_reports_queue_depth_and_tasks_in_flight(platform_api, tenant_a):
    body = platform_api.get(f"/api/tenants/{tenant_a.id}").json()

    assert body["queue_depth"] == 0
    assert body["tasks_in_flight"] == 0
    assert set(body) == {"id", "name", "slug", "domain", "concurrency", "created_at", "queue_depth", "tasks_in_flight"}
