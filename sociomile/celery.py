"""The one Celery app: tenant-aware, so a task sent inside a tenant's context runs in that tenant's schema."""

import os

from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sociomile.settings.local")

app = CeleryApp("sociomile")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Every worker consumes each tenant's queue and caps each tenant's running tasks (tenants/worker.py). Named
# by path: the step's module imports Django models, which need the settings loaded first.
app.steps["consumer"].add("tenants.worker:TenantWorkerStep")

# The request id of the request that sent a task travels in its message and is on the task's log lines
# (core.logging): added at publish, bound while the task runs, cleared after.
from celery.signals import before_task_publish, task_postrun, task_prerun  # noqa: E402
from django.db import close_old_connections  # noqa: E402

from core.logging import task_publish_request_id_add, task_request_id_bind, task_request_id_clear  # noqa: E402

before_task_publish.connect(task_publish_request_id_add, dispatch_uid="core_logging_request_id_publish")
task_prerun.connect(task_request_id_bind, dispatch_uid="core_logging_request_id_bind")
task_postrun.connect(task_request_id_clear, dispatch_uid="core_logging_request_id_clear")


def _database_connection_settle(sender=None, **kwargs) -> None:
    """After a task in a worker, its database connection is kept for the next task unless it is unusable or too
    old (settings/celery.py, CELERY_DB_REUSE_MAX, says why). A task run eagerly, inside a request or a test,
    leaves the caller's connection to the caller."""
    if not getattr(sender.request, "is_eager", False):
        close_old_connections()


task_postrun.connect(_database_connection_settle, dispatch_uid="core_db_connection_settle")
