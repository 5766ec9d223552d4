"""Per-tenant concurrency: the cap holds across worker processes, follows a live change, and one tenant's
backlog does not hold up another tenant. Real worker processes, measured with diagnostic probe tasks."""

import uuid

import pytest

from conftest import api_client, token_for, wait_for
from core.redis import get_redis
from tenants.concurrency import tenant_slots_in_use
from tenants.metrics import tenant_metrics_read
from tenants.models import Tenant
from tenants.queues import tenant_queue_depth
from tenants.services import tenant_probe_send
from tenants.tests.support import (
    finished,
    first_time_overlap_reached,
    live_platform_api,
    max_overlap,
    probe_intervals,
    start_worker,
)


def _redis_now() -> float:
    seconds, microseconds = get_redis().time()
    return seconds + microseconds / 1_000_000


# --- the endpoint ---------------------------------------------------------------------------------------


def test_put_concurrency_stores_it_and_publishes_the_limit(platform_api, tenant_a):
    response = platform_api.put(f"/api/tenants/{tenant_a.id}/config/concurrency", {"workers": 7})

    assert response.status_code == 200
    assert response.json() == {"workers": 7}
    tenant_a.refresh_from_db()
    assert tenant_a.concurrency == 7
    assert platform_api.get(f"/api/tenants/{tenant_a.id}").json()["concurrency"] == 7


@pytest.mark.parametrize("body", [{"workers": 0}, {"workers": 65}, {"workers": "4"}, {"workers": 2.5}, {"workers": True},
                                  {"workers": None}, {}, {"concurrency": 4}])  # fmt: skip
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


# --- real workers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(django_db_setup, django_db_blocker):
    """Two worker processes of three pool processes each: six slots, on two consumers."""
    workers = [start_worker(f"fleet{index}-{uuid.uuid4().hex[:4]}", concurrency=3) for index in range(2)]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.mark.worker
def test_cap_holds_across_workers_and_a_live_raise_takes_effect(fleet, make_live_tenant):
    # given a tenant capped at 2, with 16 half-second tasks and 6 idle worker slots on two workers
    tenant = make_live_tenant("cap", concurrency=2)
    platform = live_platform_api()
    run_id = tenant_probe_send(tenant=tenant, count=16, duration_ms=500)
    wait_for(lambda: finished(tenant.schema_name, run_id) >= 4, timeout=20, message="4 probes to finish at N=2")

    # when the cap is raised to 4 while its backlog runs
    response = platform.put(f"/api/tenants/{tenant.id}/config/concurrency", {"workers": 4})
    raised_at = _redis_now()

    # then exactly 2 ran at once before, exactly 4 after, and the change took effect within 2 seconds
    assert response.status_code == 200
    wait_for(lambda: finished(tenant.schema_name, run_id) == 16, timeout=30, message="all 16 probes")
    intervals = probe_intervals(tenant.schema_name, run_id)
    assert sorted(intervals) == list(range(16))
    assert all(interval["starts"] == 1 for interval in intervals.values())
    before = [interval for interval in intervals.values() if interval["start"] < raised_at]
    assert max_overlap(before) == 2
    assert max_overlap(intervals.values()) == 4
    assert first_time_overlap_reached(intervals.values(), 3) - raised_at < 2.0
    assert len({interval["worker"].split(":")[0] for interval in intervals.values()}) >= 2  # both consumers served
    assert tenant_slots_in_use(schema_name=tenant.schema_name) == 0
    # and the workers counted them for /metrics
    probe_outcomes = lambda: tenant_metrics_read(schema_names=[tenant.schema_name])[tenant.schema_name]  # noqa: E731
    wait_for(lambda: probe_outcomes().get("tasks|tenants.tasks.tenant_probe_task|succeeded") == "16", message="metrics")
    assert probe_outcomes()["duration|tenants.tasks.tenant_probe_task|count"] == "16"


@pytest.mark.worker
def test_a_tenant_backlog_does_not_delay_another_tenant(fleet, make_live_tenant, record_property):
    # given tenant A (not capped below the fleet) with a 2,000-task backlog already running
    busy = make_live_tenant("busy", concurrency=64)
    quiet = make_live_tenant("quiet")
    backlog = tenant_probe_send(tenant=busy, count=2000, duration_ms=50)
    wait_for(lambda: finished(busy.schema_name, backlog) >= 10, timeout=20, message="the backlog to be running")

    # when tenant B sends one task
    sent_at = _redis_now()
    run_id = tenant_probe_send(tenant=quiet, count=1, duration_ms=0)

    # then it runs within a small bound, while A's backlog is still nearly all there
    wait_for(lambda: finished(quiet.schema_name, run_id) == 1, timeout=10, message="tenant B's task")
    waiting = tenant_queue_depth(schema_name=busy.schema_name)
    latency = probe_intervals(quiet.schema_name, run_id)[0]["end"] - sent_at
    record_property("tenant_b_latency_seconds", round(latency, 3))
    print(f"\nfairness: tenant B's task finished {latency * 1000:.0f} ms after it was sent, "
          f"with {waiting} of tenant A's tasks still waiting")  # fmt: skip
    assert latency < 1.0
    assert waiting > 1000


@pytest.mark.worker
def test_deleting_a_tenant_waits_for_its_running_tasks_then_drops_it(fleet, make_live_tenant):
    from django_tenants.utils import schema_exists

    from tenants.services import tenant_delete

    # given a tenant with tasks running and more waiting
    tenant = make_live_tenant("drain", concurrency=2)
    run_id = tenant_probe_send(tenant=tenant, count=6, duration_ms=1000)
    wait_for(lambda: tenant_slots_in_use(schema_name=tenant.schema_name) == 2, message="2 tasks to run")

    # when it is deleted
    tenant_delete(tenant=tenant)
    deleted_at = _redis_now()

    # then the two running tasks had finished before the schema went, and no other task started
    intervals = probe_intervals(tenant.schema_name, run_id)
    assert len(intervals) == 2
    assert all(interval["end"] is not None and interval["end"] <= deleted_at for interval in intervals.values())
    assert not schema_exists(tenant.schema_name)
    assert not Tenant.objects.filter(id=tenant.id).exists()
    assert tenant_queue_depth(schema_name=tenant.schema_name) == 0
