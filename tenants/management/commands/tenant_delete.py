from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant
from tenants.services import tenant_delete


class Command(BaseCommand):
    help = "Deprovisions a tenant: consumers, queue, schema and rows."

    def add_arguments(self, parser):
        parser.add_argument("slug")

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(schema_name=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['slug']!r}")
        tenant_delete(tenant=tenant)
        self.stdout.write(f"deleted tenant {options['slug']}")
