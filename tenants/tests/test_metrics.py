"""`/metrics` on the platform host: per-tenant queue depth, tasks in flight, outcomes and durations."""

from django.test import override_settings

from core.tests.support import api_client, make_user, token_for
from core.models import User
from tenants.metrics import tenant_metrics_forget, tenant_task_observe


def test_metrics_export_per_tenant_gauges_counters_and_histograms(platform_api, tenant_a, tenant_b):
    # given two finished tasks of tenant A
    tenant_metrics_forget(schema_name=tenant_a.schema_name)
    tenant_task_observe(schema_name=tenant_a.schema_name, task_name="x.task", outcome="succeeded", seconds=0.02)
    tenant_task_observe(schema_name=tenant_a.schema_name, task_name="x.task", outcome="failed", seconds=3.0)

    # when Prometheus scrapes
    response = platform_api.get("/metrics")

    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    lines = set(response.content.decode().splitlines())
    assert {
        'sociomile_tenant_queue_depth{tenant="alpha"} 0.0',
        'sociomile_tenant_queue_depth{tenant="beta"} 0.0',
        'sociomile_tenant_tasks_in_flight{tenant="alpha"} 0.0',
        'sociomile_tenant_concurrency_limit{tenant="alpha"} 3.0',
        'sociomile_tenant_tasks_total{outcome="succeeded",task="x.task",tenant="alpha"} 1.0',
        'sociomile_tenant_tasks_total{outcome="failed",task="x.task",tenant="alpha"} 1.0',
        'sociomile_tenant_task_duration_seconds_bucket{le="0.01",task="x.task",tenant="alpha"} 0.0',
        'sociomile_tenant_task_duration_seconds_bucket{le="0.025",task="x.task",tenant="alpha"} 1.0',
        'sociomile_tenant_task_duration_seconds_bucket{le="2.5",task="x.task",tenant="alpha"} 1.0',
        'sociomile_tenant_task_duration_seconds_bucket{le="5.0",task="x.task",tenant="alpha"} 2.0',
        'sociomile_tenant_task_duration_seconds_bucket{le="+Inf",task="x.task",tenant="alpha"} 2.0',
        'sociomile_tenant_task_duration_seconds_count{task="x.task",tenant="alpha"} 2.0',
        'sociomile_tenant_task_duration_seconds_sum{task="x.task",tenant="alpha"} 3.02',
    } <= lines
    assert not any('tenant="beta"' in line and "tasks_total" in line for line in lines)
    tenant_metrics_forget(schema_name=tenant_a.schema_name)


def test_metrics_need_a_platform_admin_or_the_bearer_token(db, tenant_a):
    tenant_token = token_for(make_user(tenant=tenant_a, role=User.Role.ADMIN), tenant=tenant_a)

    assert api_client().get("/metrics").status_code == 401
    assert api_client(token=tenant_token).get("/metrics").status_code == 401
    assert api_client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 401
    with override_settings(METRICS_BEARER_TOKEN="scrape-secret-123"):
        assert api_client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-123").status_code == 200
        assert api_client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401


def test_metrics_are_not_served_on_tenant_hosts(tenant_a):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)

    assert api_client(tenant=tenant_a, token=token_for(admin, tenant=tenant_a)).get("/metrics").status_code == 404
