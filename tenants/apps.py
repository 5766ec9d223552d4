from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"

    def ready(self):
        from celery.signals import task_postrun, task_prerun

        from tenants import metrics

        # Per-tenant task outcomes and durations, recorded in the worker process that ran the task.
        task_prerun.connect(metrics.on_task_prerun, dispatch_uid="tenants_metrics_prerun")
        task_postrun.connect(metrics.on_task_postrun, dispatch_uid="tenants_metrics_postrun")
