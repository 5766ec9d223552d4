"""`/metrics` on the platform host: per-tenant queue depth, tasks in flight, outcomes and durations."""

import pytest
from django.test import override_settings

from core.tests.support import api_client, make_user, token_for, wait_for
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


def _scraped(platform_api) -> set[str]:
    response = platform_api.get("/metrics")
    assert response.status_code == 200
    return set(response.content.decode().splitlines())


def test_metrics_export_queue_waits_assignment_waits_delivery_outcomes_and_5xx(platform_api, tenant_a):
    # given a task that waited 0.3 s in its queue, two chats assigned after 4 s and 100 s, runs' delivery
    # outcomes and one 5xx answer of the platform host
    from tenants.metrics import http_server_error_count, tenant_assignment_waits_observe, tenant_deliveries_count

    tenant_metrics_forget(schema_name="public")
    tenant_metrics_forget(schema_name=tenant_a.schema_name)
    tenant_task_observe(schema_name="alpha", task_name="x.task", outcome="succeeded", seconds=0.02, wait_seconds=0.3)
    tenant_assignment_waits_observe(schema_name="alpha", waits=[4.0, 100.0])
    tenant_deliveries_count(schema_name="alpha", channel="outbound", outcomes={"sent": 3, "retrying": 0, "failed": 1})
    tenant_deliveries_count(schema_name="alpha", channel="webhook", outcomes={"succeeded": 2, "retrying": 1, "dead": 0})
    tenant_deliveries_count(schema_name="alpha", channel="webhook", outcomes={"succeeded": 1, "retrying": 0, "dead": 0})
    http_server_error_count(schema_name="public")

    # when Prometheus scrapes
    lines = _scraped(platform_api)

    # then each is a series of its own, per tenant
    assert {
        'sociomile_tenant_task_wait_seconds_bucket{le="0.25",task="x.task",tenant="alpha"} 0.0',
        'sociomile_tenant_task_wait_seconds_bucket{le="0.5",task="x.task",tenant="alpha"} 1.0',
        'sociomile_tenant_task_wait_seconds_count{task="x.task",tenant="alpha"} 1.0',
        'sociomile_tenant_assignment_wait_seconds_bucket{le="5.0",tenant="alpha"} 1.0',
        'sociomile_tenant_assignment_wait_seconds_bucket{le="60.0",tenant="alpha"} 1.0',
        'sociomile_tenant_assignment_wait_seconds_bucket{le="120.0",tenant="alpha"} 2.0',
        'sociomile_tenant_assignment_wait_seconds_sum{tenant="alpha"} 104.0',
        'sociomile_tenant_deliveries_total{channel="outbound",outcome="sent",tenant="alpha"} 3.0',
        'sociomile_tenant_deliveries_total{channel="outbound",outcome="failed",tenant="alpha"} 1.0',
        'sociomile_tenant_deliveries_total{channel="webhook",outcome="succeeded",tenant="alpha"} 3.0',
        'sociomile_tenant_deliveries_total{channel="webhook",outcome="retrying",tenant="alpha"} 1.0',
        'sociomile_http_server_errors_total{tenant="public"} 1.0',
    } <= lines
    assert not any("outcome=\"retrying\"" in line and "outbound" in line for line in lines)  # zeros cost nothing
    tenant_metrics_forget(schema_name="public")
    tenant_metrics_forget(schema_name=tenant_a.schema_name)


def test_a_5xx_answer_of_a_tenant_host_is_counted_for_that_tenant(platform_api, tenant_a, tenant_a_admin, monkeypatch):
    from django.test import Client

    from core.tests.support import host_of

    # given a bug in a tenant's endpoint
    tenant_metrics_forget(schema_name=tenant_a.schema_name)
    monkeypatch.setattr("core.apis.AuthMeApi.get", lambda self, request: 1 / 0)
    client = Client(HTTP_HOST=host_of(tenant_a), raise_request_exception=False)
    token = token_for(tenant_a_admin, tenant=tenant_a)

    # when it answers 500 twice, and 200 on another path
    statuses = [client.get("/api/auth/me", HTTP_AUTHORIZATION=f"Token {token}").status_code for _ in range(2)]
    statuses.append(client.get("/health").status_code)

    # then /metrics counts the two 5xx for that tenant
    assert statuses == [500, 500, 200]
    assert 'sociomile_http_server_errors_total{tenant="alpha"} 2.0' in _scraped(platform_api)
    tenant_metrics_forget(schema_name=tenant_a.schema_name)


@pytest.mark.worker
def test_a_task_run_by_a_worker_records_its_wait_in_the_queue(celery_worker, make_live_tenant):
    # given a tenant, and a task published for it through the API
    tenant = make_live_tenant("wait")
    platform = api_client(token=token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None))
    assert platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": 1}}).status_code == 202

    # when the worker has run it, then its wait since publish is in the tenant's histogram
    count = f'sociomile_tenant_task_wait_seconds_count{{task="conversations.tasks.inbound_event_record_task",tenant="{tenant.schema_name}"}} 1.0'
    wait_for(lambda: count in _scraped(platform), timeout=30, message="the task's wait to be recorded")
