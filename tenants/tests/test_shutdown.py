"""Workers stopping: SIGTERM lets the running task finish; SIGKILL loses nothing and duplicates nothing."""

import os
import signal
import socket
import uuid

import psycopg
import pytest
from django.db import connection
from django_tenants.utils import schema_context

from conftest import _test_database_url, wait_for
from conversations.models import InboundEvent
from sociomile.celery import app
from tenants.concurrency import tenant_slots_in_use
from tenants.services import tenant_probe_send
from tenants.tests.support import live_platform_api, probe_intervals, start_worker, worker_slots


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return children


def _node_name(worker) -> str:
    return f"{worker.name}@{socket.gethostname()}"


@pytest.fixture
def spawn_worker():
    """Starts worker processes for one test and makes sure none outlives it, whatever the test did."""
    spawned = []

    def spawn(prefix: str, *, concurrency: int):
        worker = start_worker(f"{prefix}-{uuid.uuid4().hex[:6]}", concurrency=concurrency)
        spawned.append(worker)
        return worker

    yield spawn
    for worker in spawned:
        if worker.process.poll() is None:
            for pid in [worker.process.pid, *_children(worker.process.pid)]:
                os.kill(pid, signal.SIGKILL)
        worker.stop()


@pytest.mark.worker
def test_sigterm_lets_the_running_task_finish_before_the_worker_exits(celery_worker, make_live_tenant, spawn_worker):
    # given a worker with one pool process, running a 2-second task of a tenant (more tasks than all other
    # workers' slots are sent, so one of them lands on it)
    worker = spawn_worker("term", concurrency=1)
    tenant = make_live_tenant("term", concurrency=64)
    others = worker_slots(excluding=_node_name(worker))
    run_id = tenant_probe_send(tenant=tenant, count=others + 1, duration_ms=2000)

    def running_on_worker():
        return [index for index, interval in probe_intervals(tenant.schema_name, run_id).items()
                if interval.get("worker", "").startswith(_node_name(worker))]  # fmt: skip

    held = wait_for(running_on_worker, timeout=15, message="a task to run on the worker")

    # when the worker gets SIGTERM mid-task
    worker.process.send_signal(signal.SIGTERM)
    exit_code = worker.process.wait(timeout=20)

    # then it finished that task before exiting, cleanly, and the task ran exactly once
    intervals = probe_intervals(tenant.schema_name, run_id)
    assert exit_code == 0
    assert held == [held[0]]
    assert intervals[held[0]]["end"] is not None
    assert "Warm shutdown" in worker.log()
    wait_for(lambda: all(item["end"] for item in probe_intervals(tenant.schema_name, run_id).values())
             and len(probe_intervals(tenant.schema_name, run_id)) == others + 1, timeout=15, message="every task")  # fmt: skip
    assert [interval["starts"] for interval in probe_intervals(tenant.schema_name, run_id).values()] == [1] * (others + 1)


@pytest.mark.worker
def test_sigkill_mid_task_loses_no_event_and_duplicates_none(celery_worker, make_live_tenant, spawn_worker):
    # given a worker whose two processes are in the middle of persisting events: the test holds a lock on
    # the tenant's event table, so every consumer blocks inside the task, before its write commits
    victim = spawn_worker("victim", concurrency=2)
    tenant = make_live_tenant("kill", concurrency=64)
    platform = live_platform_api()
    count = worker_slots(excluding=_node_name(victim)) + 2
    lock = psycopg.connect(_test_database_url())
    try:
        lock.execute(f'LOCK TABLE "{tenant.schema_name}".conversations_inboundevent IN EXCLUSIVE MODE')
        accepted = [
            platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": n}}).json()["id"] for n in range(count)
        ]
        active = wait_for(
            lambda: len((app.control.inspect(destination=[_node_name(victim)], timeout=1).active() or {})
                        .get(_node_name(victim), [])) == 2,
            timeout=15, message="the victim to run 2 event tasks",
        )  # fmt: skip
        assert active

        # when the worker is killed outright (its main process and its pool processes)
        for pid in [victim.process.pid, *_children(victim.process.pid)]:
            os.kill(pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        lock.rollback()

        # then the dead worker's two slots stay taken only until their leases expire (3 s here)...
        wait_for(lambda: tenant_slots_in_use(schema_name=tenant.schema_name) == 2, message="only the dead leases left")
        wait_for(lambda: tenant_slots_in_use(schema_name=tenant.schema_name) == 0, timeout=6, message="leases to expire")
        # ...a surviving worker gets the killed worker's messages back, and every event is stored once
        spawn_worker("survivor", concurrency=2)

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
