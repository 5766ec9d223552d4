from django.db.models import QuerySet

from tenants.models import Domain, Tenant


def tenant_list() -> QuerySet[Tenant]:
    return Tenant.objects.prefetch_related("domains")


def tenant_get(*, tenant_id: int) -> Tenant | None:
    return tenant_list().filter(id=tenant_id).first()


def tenant_get_for_hostname(*, hostname: str) -> Tenant | None:
    """The tenant served at this host, or None. Runs on every request: one indexed lookup."""
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    return domain.tenant if domain is not None else None


def tenant_primary_domain(*, tenant: Tenant) -> str | None:
    domains = list(tenant.domains.all())  # prefetched by tenant_list
    primary = next((domain for domain in domains if domain.is_primary), domains[0] if domains else None)
    return primary.domain if primary is not None else None
