from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.transfer import TransferRefused, tenant_import


class Command(BaseCommand):
    help = (
        "Restores a tenant_export archive into this database and Redis. Refused, with nothing written, if the "
        "tenant (slug, schema, domain or Redis keys) exists here or the migrations differ (tenants/transfer.py)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="an archive written by tenant_export")

    def handle(self, *args, **options):
        if not options["file"].is_file():
            raise CommandError(f"no file {options['file']}")
        try:
            tenant = tenant_import(path=options["file"])
        except TransferRefused as error:
            raise CommandError(error.message) from error
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        self.stdout.write(f"imported tenant {tenant.schema_name} from {options['file']}")
