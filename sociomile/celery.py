"""The one Celery app: tenant-aware, so a task sent inside a tenant's context runs in that tenant's schema."""

import os

from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sociomile.settings.local")

app = CeleryApp("sociomile")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _install_worker_steps(celery_app: CeleryApp) -> None:
    # Imported here: the step imports Django models, which need the settings loaded first.
    from tenants.concurrency import TenantConcurrencyStep
    from tenants.queues import TenantQueuesStep

    celery_app.steps["consumer"].add(TenantQueuesStep)
    # Caps each tenant's running tasks at its `concurrency`, fleet-wide (tenants.concurrency).
    celery_app.steps["consumer"].add(TenantConcurrencyStep)


_install_worker_steps(app)
