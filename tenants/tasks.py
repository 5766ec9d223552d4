from django_tenants.utils import schema_context

from sociomile.celery import app
from tenants.models import Tenant


@app.task
def tenants_fanout_task(task_name: str) -> None:
    """Sends the task named `task_name` to every tenant's queue, to run in its schema.

    celery-beat runs this from the public schema for per-tenant safety nets (draining queued creations,
    reconciling counts), so a new tenant is covered the moment it exists and a deleted one no longer is.
    """
    for schema_name in Tenant.objects.values_list("schema_name", flat=True):
        with schema_context(schema_name):
            app.send_task(task_name)
