from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tenants.transfer import TransferRefused, tenant_export


class Command(BaseCommand):
    help = (
        "Writes one archive of a tenant: its schema's tables, its public rows and its Redis keys, with a manifest "
        "(tenants/transfer.py). Stop the tenant's traffic first (docs/tenant-moves.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("file", type=Path, help="the archive to write (a gzipped tar)")

    def handle(self, *args, **options):
        try:
            manifest = tenant_export(slug=options["slug"], path=options["file"])
        except TransferRefused as error:
            raise CommandError(error.message) from error
        rows = sum(table["rows"] for table in manifest["tables"])
        self.stdout.write(
            f"exported tenant {manifest['slug']} to {options['file']}: {len(manifest['tables'])} tables, "
            f"{rows} rows, {manifest['redis_keys']} Redis keys"
        )
