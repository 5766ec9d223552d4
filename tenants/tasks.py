import os
import socket
import time

from django_tenants.utils import schema_context

from sociomile.celery import app
from tenants.models import Tenant
from tenants.services import tenant_probe_record


@app.task
def tenants_fanout_task(task_name: str) -> None:
    """Sends the task named `task_name` to every tenant's queue, to run in its schema.

    celery-beat runs this from the public schema for per-tenant safety nets (draining queued creations,
    reconciling counts), so a new tenant is covered the moment it exists and a deleted one no longer is.
    """
    for schema_name in Tenant.objects.values_list("schema_name", flat=True):
        with schema_context(schema_name):
            app.send_task(task_name)


@app.task(bind=True)
def tenant_probe_task(self, run_id: str, index: int, duration_ms: int = 0) -> None:
    """Diagnostic: occupies one of the tenant's slots for `duration_ms` and records when it ran, where.

    Sent in a tenant's context (`tenant_probe_send`), it goes through exactly what the tenant's real work
    goes through: its queue, its consumers, its concurrency cap. Operators use it to check a tenant end to
    end (queue latency, cap, fairness); the tests use it to measure overlap. Writes nothing but a
    short-lived Redis list under the tenant's own key, so it is safe to run on a live tenant.
    """
    worker = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    tenant_probe_record(run_id=run_id, index=index, event="start", worker=worker)
    time.sleep(duration_ms / 1000)
    tenant_probe_record(run_id=run_id, index=index, event="end", worker=worker)
