from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

from tenants.services import tenant_template_sync


class Command(MigrateSchemasCommand):
    """django-tenants' `migrate_schemas`, which also migrates the template schema new tenants are cloned from."""

    def handle(self, *args, **options):
        super().handle(*args, **options)
        migrates_every_tenant = self.sync_tenant and not options.get("schema_name") and not options.get("app_label")
        if migrates_every_tenant:
            tenant_template_sync(verbosity=options.get("verbosity", 1))
