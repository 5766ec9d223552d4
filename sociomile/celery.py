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
