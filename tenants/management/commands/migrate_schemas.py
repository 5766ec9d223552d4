from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand
from django_tenants.utils import schema_context

from scheduler.services import scheduler_ensure
from tenants.models import Tenant
from tenants.services import tenant_template_sync


class Command(MigrateSchemasCommand):
    """django-tenants' `migrate_schemas`, which also migrates the template schema new tenants are cloned from
    and gives tenants made before a per-tenant job existed their share of it (idempotent)."""

    def handle(self, *args, **options):
        super().handle(*args, **options)
        migrates_every_tenant = self.sync_tenant and not options.get("schema_name") and not options.get("app_label")
        if migrates_every_tenant:
            tenant_template_sync(verbosity=options.get("verbosity", 1))
            for schema_name in Tenant.objects.values_list("schema_name", flat=True):
                with schema_context(schema_name):
                    scheduler_ensure()
