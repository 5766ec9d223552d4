from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from reports.services import reports_rebuild
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Recomputes a tenant's report rollups from its chats, messages and assignment history."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--backfill-first-times",
            action="store_true",
            help="Also fill chats' missing first_response_at / first_assigned_at from the rows (run it while the "
            "tenant is quiet: it updates chat rows under the rollups' lock).",
        )

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(schema_name=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['slug']!r}")
        with schema_context(tenant.schema_name):
            rows = reports_rebuild(backfill_first_times=options["backfill_first_times"])
        self.stdout.write(f"rebuilt {rows} rollup rows for tenant {tenant.schema_name}")
