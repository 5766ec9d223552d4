from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant
from tenants.services import TenantNotFound, tenant_delete


class Command(BaseCommand):
    help = "Deprovisions a tenant: consumers, queue, schema and rows."

    def add_arguments(self, parser):
        parser.add_argument("slug")

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(schema_name=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['slug']!r}")
        try:
            tenant_delete(tenant=tenant)
        except TenantNotFound as error:
            raise CommandError(f"tenant {options['slug']!r} is already being deleted") from error
        self.stdout.write(f"deleted tenant {options['slug']}")
