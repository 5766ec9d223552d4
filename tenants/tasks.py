import os
import socket
import time

from sociomile.celery import app
from tenants.services import tenant_probe_record
from tenants.work import tenant_work_dispatch


@app.task(ignore_result=True)
def tenant_work_dispatch_task() -> None:
    """Sends each kind of due background work to the tenants that have it (beat's `tenant-work-dispatch`).

    Runs in the public schema. Finds work through the due-work index only (tenants.work), never by visiting
    every tenant: with nothing due it is one indexed query and one Redis script call.
    """
    tenant_work_dispatch()


@app.task(bind=True)
def tenant_probe_task(self, run_id: str, index: int, duration_ms: int = 0) -> None:
    """Diagnostic: occupies one of the tenant's slots for `duration_ms` and records when it ran, where.

    Sent in a tenant's context (`tenant_probe_schedule`), it goes through exactly what the tenant's real work
    goes through: its queue, its consumers, its concurrency cap. Operators use it to check a tenant end to
    end (queue latency, cap, fairness); the tests use it to measure overlap. Writes nothing but a
    short-lived Redis list under the tenant's own key, so it is safe to run on a live tenant.
    """
    worker = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    tenant_probe_record(run_id=run_id, index=index, event="start", worker=worker)
    time.sleep(duration_ms / 1000)
    tenant_probe_record(run_id=run_id, index=index, event="end", worker=worker)
