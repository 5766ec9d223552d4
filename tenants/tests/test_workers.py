"""Tenant work on real worker processes: the per-tenant cap across workers and a live change of it,
fairness under a large backlog, deletion that waits for running tasks, SIGTERM and SIGKILL.

Measured with the diagnostic probe task (tenants.tasks.tenant_probe_task), which records when and where
it ran with Redis's clock. One set of workers serves the whole module; they boot in parallel.
"""

import os
import signal
import socket
import uuid

import psycopg
import pytest
from django.db import connection
from django_tenants.utils import schema_context, schema_exists

from core.tests.fixtures.workers import _test_database_url, WorkerProcess

from core.tests.support import wait_for
from conversations.models import InboundEvent
from core.redis import get_redis, tenant_keys_delete
from live_stack import child_pids
from sociomile.celery import app
from tenants.concurrency import (
    tenant_slot_acquire,
    tenant_slot_release,
    tenant_slots_in_use,
)
from tenants.metrics import tenant_metrics_read
from tenants.models import Tenant
from tenants.queues import tenant_queue_depth
from tenants.services import tenant_delete, tenant_probe_schedule
from tenants.tests.support import (
    FAST_RECOVERY_ENV,
    finished,
    first_time_overlap_reached,
    live_platform_api,
    max_overlap,
    probe_intervals,
    worker_slots,
)

pytestmark = pytest.mark.worker


def _redis_now() -> float:
    seconds, microseconds = get_redis().time()
    return seconds + microseconds / 1_000_000


def _kill_outright(worker: WorkerProcess) -> None:
    """SIGKILL to the worker's main process and its pool processes, as when a machine is lost."""
    for pid in [worker.process.pid, *child_pids(worker.process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.process.wait(timeout=10)


def _node_name(worker: WorkerProcess) -> str:
    return f"{worker.name}@{socket.gethostname()}"


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker):
    """Two workers of three processes (the fleet), plus one to SIGTERM and one to SIGKILL, all consuming
    every tenant's queue. Dead workers' tasks come back within seconds here (FAST_RECOVERY_ENV)."""
    suffix = uuid.uuid4().hex[:4]
    started = {
        "fleet0": WorkerProcess(name=f"fleet0-{suffix}", concurrency=3, extra_env=FAST_RECOVERY_ENV, wait=False),
        "fleet1": WorkerProcess(name=f"fleet1-{suffix}", concurrency=3, extra_env=FAST_RECOVERY_ENV, wait=False),
        "term": WorkerProcess(name=f"term-{suffix}", concurrency=1, extra_env=FAST_RECOVERY_ENV, wait=False),
        "victim": WorkerProcess(name=f"victim-{suffix}", concurrency=2, extra_env=FAST_RECOVERY_ENV, wait=False),
    }
    try:
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        for worker in started.values():
            if worker.process.poll() is None and worker.name.startswith("victim"):
                _kill_outright(worker)
            worker.stop()


def test_cap_holds_across_workers_and_a_live_raise_takes_effect(workers, make_live_tenant):
    # given a tenant capped at 2, with 16 half-second tasks and at least 8 idle pool processes on 4 workers
    tenant = make_live_tenant("cap", concurrency=2)
    platform = live_platform_api()
    run_id = tenant_probe_schedule(tenant=tenant, count=16, duration_ms=500)
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
    took_effect = first_time_overlap_reached(intervals.values(), 3) - raised_at
    print(f"\ncap: overlap 2 before the raise, 4 after; a third task started {took_effect * 1000:.0f} ms after it")
    assert took_effect < 2.0
    assert len({interval["worker"].split(":")[0] for interval in intervals.values()}) >= 2  # several workers served
    # A probe records its end before its worker releases its slot: the last release may still be on its way.
    wait_for(lambda: tenant_slots_in_use(schema_name=tenant.schema_name) == 0, timeout=5, message="every slot released")
    # and the workers counted them for /metrics
    outcomes = lambda: tenant_metrics_read(schema_names=[tenant.schema_name])[tenant.schema_name]  # noqa: E731
    wait_for(lambda: outcomes().get("tasks|tenants.tasks.tenant_probe_task|succeeded") == "16", message="metrics")
    assert outcomes()["duration|tenants.tasks.tenant_probe_task|count"] == "16"


def test_a_tenant_backlog_does_not_delay_another_tenant(workers, make_live_tenant, record_property):
    # given tenant A with a 2,000-task backlog (queued while A was capped at 1), then uncapped (64, more
    # than all the workers' processes) so the backlog competes for every process
    busy = make_live_tenant("busy", concurrency=1)
    quiet = make_live_tenant("quiet")
    tenant_probe_schedule(tenant=busy, count=2000, duration_ms=50)
    live_platform_api().put(f"/api/tenants/{busy.id}/config/concurrency", {"workers": 64})
    wait_for(lambda: tenant_slots_in_use(schema_name=busy.schema_name) >= 6, message="the backlog to fill the workers")

    # when tenant B sends one task
    sent_at = _redis_now()
    run_id = tenant_probe_schedule(tenant=quiet, count=1, duration_ms=0)

    # then it runs within a small bound, while most of A's backlog still waits
    wait_for(lambda: finished(quiet.schema_name, run_id) == 1, timeout=10, message="tenant B's task")
    waiting = tenant_queue_depth(schema_name=busy.schema_name)
    latency = probe_intervals(quiet.schema_name, run_id)[0]["end"] - sent_at
    record_property("tenant_b_latency_seconds", round(latency, 3))
    print(f"\nfairness: tenant B's task finished {latency * 1000:.0f} ms after it was sent, "
          f"with {waiting} of tenant A's tasks still waiting")  # fmt: skip
    assert latency < 1.0
    assert waiting > 1000


def test_deleting_a_tenant_waits_for_its_running_tasks_then_drops_it(workers, make_live_tenant, monkeypatch):
    # given a tenant with 2 tasks running (its cap) and 4 more waiting or parked
    tenant = make_live_tenant("drain", concurrency=2)
    run_id = tenant_probe_schedule(tenant=tenant, count=6, duration_ms=1000)
    wait_for(lambda: tenant_slots_in_use(schema_name=tenant.schema_name) == 2, message="2 tasks to run")
    # (the probes' records are the tenant's Redis keys, deleted last with all the others: read them just before)
    recorded = {}

    def read_probes_then_delete_keys(schema_name):
        recorded.update(probe_intervals(schema_name, run_id))
        return tenant_keys_delete(schema_name)

    monkeypatch.setattr("tenants.services.tenant_keys_delete", read_probes_then_delete_keys)

    # when it is deleted
    tenant_delete(tenant=tenant)
    deleted_at = _redis_now()

    # then the two running tasks had finished before the schema went, no other task started, and the
    # queue is gone with what waited in it
    intervals = recorded
    assert len(intervals) == 2
    assert all(interval["end"] is not None and interval["end"] <= deleted_at for interval in intervals.values())
    assert not schema_exists(tenant.schema_name)
    assert not Tenant.objects.filter(id=tenant.id).exists()
    assert tenant_queue_depth(schema_name=tenant.schema_name) == 0


def test_sigterm_lets_the_running_task_finish_before_the_worker_exits(workers, make_live_tenant):
    worker = workers["term"]
    saturated = make_live_tenant("parked", concurrency=1)
    tenant = make_live_tenant("term", concurrency=64)
    count = worker_slots(excluding=_node_name(worker)) + 1
    # given a tenant at its limit (1, its slot held by the test as if by another worker) whose tasks every
    # worker parks...
    assert tenant_slot_acquire(schema_name=saturated.schema_name, token="held-by-the-test", fallback_limit=1) == 1
    parked_count = 12
    parked_run = tenant_probe_schedule(tenant=saturated, count=parked_count, duration_ms=50)
    wait_for(lambda: f"tenant {saturated.schema_name} is at its concurrency limit" in worker.log(),
             message="the worker to park a task")  # fmt: skip
    # ...and a worker with one pool process, parking one of them and running a 1.5-second task of another
    # tenant (as many of those are sent as all workers have processes, so one lands on its only process)
    run_id = tenant_probe_schedule(tenant=tenant, count=count, duration_ms=1500)

    def running_on_worker():
        return [index for index, interval in probe_intervals(tenant.schema_name, run_id).items()
                if interval.get("worker", "").startswith(_node_name(worker))]  # fmt: skip

    held = wait_for(running_on_worker, timeout=15, message="a task to run on the worker")

    # when the worker gets SIGTERM mid-task
    worker.process.send_signal(signal.SIGTERM)
    exit_code = worker.process.wait(timeout=20)

    # then it finished that task before exiting, cleanly, handing back the task it had parked
    assert exit_code == 0
    assert len(held) == 1
    assert probe_intervals(tenant.schema_name, run_id)[held[0]]["end"] is not None
    assert "Warm shutdown" in worker.log()
    # (the parked message was never acknowledged: RabbitMQ requeues it when the worker's channel closes;
    # the parked tasks' single runs below are the proof it came back)
    # and it gave its slot back on the way out, instead of leaving it to expire
    leases = get_redis().zrange(f"sociomile:{tenant.schema_name}:slots", 0, -1)
    assert [lease for lease in leases if lease.decode().startswith(_node_name(worker))] == []
    # and every task ran, each exactly once: nothing the worker ran or parked was lost or handed out twice
    tenant_slot_release(schema_name=saturated.schema_name, token="held-by-the-test")
    wait_for(lambda: finished(tenant.schema_name, run_id) == count, timeout=20, message="every task")
    assert [item["starts"] for item in probe_intervals(tenant.schema_name, run_id).values()] == [1] * count
    wait_for(lambda: finished(saturated.schema_name, parked_run) == parked_count, timeout=20, message="the parked ones")
    parked = probe_intervals(saturated.schema_name, parked_run)
    assert [item["starts"] for item in parked.values()] == [1] * parked_count
    assert max_overlap(parked.values()) == 1


def test_sigkill_mid_task_loses_no_event_and_duplicates_none(workers, make_live_tenant):
    # given a worker whose two processes are in the middle of persisting events: the test holds a lock on
    # the tenant's event table, so every consumer blocks inside the task, before its write commits (as
    # many events are sent as all workers have processes, so two of them are the victim's)
    victim = workers["victim"]
    tenant = make_live_tenant("kill", concurrency=64)
    platform = live_platform_api()
    count = worker_slots(excluding=_node_name(victim)) + 2
    lock = psycopg.connect(_test_database_url())
    try:
        lock.execute(f'LOCK TABLE "{tenant.schema_name}".conversations_inboundevent IN EXCLUSIVE MODE')
        url = f"/api/tenants/{tenant.id}/messages"
        accepted = [platform.post(url, {"payload": {"n": n}}).json()["id"] for n in range(count)]
        wait_for(
            lambda: len((app.control.inspect(destination=[_node_name(victim)], timeout=1).active() or {})
                        .get(_node_name(victim), [])) == 2,
            timeout=15, message="the victim to run 2 event tasks",
        )  # fmt: skip

        # when the worker is killed outright, and the lock released
        _kill_outright(victim)
        lock.rollback()

        # then the dead worker's two slots stay taken only until their leases expire (3 s here)...
        wait_for(lambda: tenant_slots_in_use(schema_name=tenant.schema_name) == 2, message="only the dead leases left")
        wait_for(lambda: tenant_slots_in_use(schema_name=tenant.schema_name) == 0, timeout=6, message="expiry")

        # ...other workers get its messages back (RabbitMQ requeues them when its connection drops), and every
        # event is stored once
        def persisted():
            with schema_context(tenant.schema_name):
                return sorted(str(event_id) for event_id in InboundEvent.objects.values_list("id", flat=True))

        wait_for(lambda: len(persisted()) == count, timeout=30, message=f"{count} events")
        assert persisted() == sorted(accepted)
        with schema_context(tenant.schema_name):
            assert set(InboundEvent.objects.values_list("status", flat=True)) == {InboundEvent.Status.PROCESSED}
        assert victim.process.returncode == -signal.SIGKILL
    finally:
        lock.close()
        connection.set_schema_to_public()
