"""Many tenants at once, for benchmarks and scale tests: rows and schemas, without the per-tenant work of
provisioning (no admin user, no queue or concurrency slots, no scheduler setting: add what a scenario needs)."""

from django.conf import settings
from django.db import transaction

from tenants.models import Domain, Tenant
from tenants.schemas import schema_clone_many
from tenants.services import tenant_domain_name


def tenants_bulk_create(*, slugs: list[str], per_transaction: int = 25) -> list[Tenant]:
    """Creates a tenant (row, primary domain, schema copied from the migrated template) for each slug.

    Schemas are copied `per_transaction` at a time (tenants.schemas.schema_clone_many); the rows are
    written once every schema exists, so a failure part-way leaves schemas without rows, never the reverse
    (drop them by name). Must not be called inside a transaction.
    """
    schema_clone_many(source=settings.TENANT_TEMPLATE_SCHEMA, targets=slugs, per_transaction=per_transaction)
    with transaction.atomic():
        tenants = Tenant.objects.bulk_create([Tenant(schema_name=slug, name=slug) for slug in slugs], batch_size=1000)
        Domain.objects.bulk_create(
            [Domain(domain=tenant_domain_name(slug=t.schema_name), tenant=t, is_primary=True) for t in tenants],
            batch_size=1000,
        )
    return tenants
