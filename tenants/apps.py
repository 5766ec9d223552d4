from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"

    def ready(self):
        from celery.signals import before_task_publish, task_postrun, task_prerun
        from django.db.models.signals import post_delete, post_save

        from core.routing import routing_changed_receiver
        from tenants import metrics
        from tenants.models import Domain, Tenant

        # The routing cache (core.routing) must hear of every change to a tenant or a domain, whoever makes
        # it (services, the admin and its inlines, a cascade): a model hook, not a call in each service.
        for model in (Tenant, Domain):
            post_save.connect(routing_changed_receiver, sender=model, dispatch_uid=f"routing_save_{model.__name__}")
            post_delete.connect(routing_changed_receiver, sender=model, dispatch_uid=f"routing_delete_{model.__name__}")

        # Per-tenant task outcomes and durations, recorded in the worker process that ran the task.
        task_prerun.connect(metrics.on_task_prerun, dispatch_uid="tenants_metrics_prerun")
        task_postrun.connect(metrics.on_task_postrun, dispatch_uid="tenants_metrics_postrun")
        # A task's wait in its queue: stamped at publish (web or worker), observed when it ends.
        before_task_publish.connect(metrics.on_before_task_publish, dispatch_uid="tenants_metrics_publish")
        # A chat's wait from arrival to assignment, observed after the assignment commits.
        from agents.hooks import chats_assigned_listen

        chats_assigned_listen(metrics.on_chats_assigned)
