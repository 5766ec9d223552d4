from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.services import tenant_create


class Command(BaseCommand):
    help = "Provisions a tenant: schema, domain, admin user, queue."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--admin-password", required=True)
        parser.add_argument("--concurrency", type=int, default=3)

    def handle(self, *args, **options):
        try:
            tenant = tenant_create(
                name=options["name"],
                slug=options["slug"],
                admin_email=options["admin_email"],
                admin_password=options["admin_password"],
                concurrency=options["concurrency"],
            )
        except ValidationError as error:
            raise CommandError(str(error.message_dict if hasattr(error, "error_dict") else error.messages)) from error
        self.stdout.write(f"created tenant {tenant.schema_name} (id {tenant.id})")
