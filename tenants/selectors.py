import json

from django.db.models import QuerySet

from core.redis import get_redis, tenant_key
from core.routing import RoutingCache

from tenants.models import Domain, Tenant


def tenant_list() -> QuerySet[Tenant]:
    """Tenants being served: one that is being deleted is gone for the API already (tenant_delete)."""
    return Tenant.objects.filter(deleting_since__isnull=True).prefetch_related("domains")


def tenant_get(*, tenant_id: int) -> Tenant | None:
    return tenant_list().filter(id=tenant_id).first()


_tenants_by_hostname = RoutingCache("tenant by hostname")


def tenant_get_for_hostname(*, hostname: str) -> Tenant | None:
    """The tenant served at this host, or None. Runs on every request: inside one it is served from the
    process-local routing cache (core.routing), else one indexed lookup."""

    def load() -> Tenant | None:
        # A tenant being deleted is no longer served: its host is unknown from the moment the deletion starts.
        domain = Domain.objects.select_related("tenant").filter(domain=hostname, tenant__deleting_since__isnull=True).first()
        return domain.tenant if domain is not None else None

    return _tenants_by_hostname.get_or_load(hostname, load)


def tenant_is_served(*, tenant_id: int) -> bool:
    """Whether the tenant still exists and is not being deleted, read now (no cache): for a request that
    failed while its tenant may have been deleted under it."""
    return Tenant.objects.filter(id=tenant_id, deleting_since__isnull=True).exists()


def tenant_primary_domain(*, tenant: Tenant) -> str | None:
    domains = list(tenant.domains.all())  # prefetched by tenant_list
    primary = next((domain for domain in domains if domain.is_primary), domains[0] if domains else None)
    return primary.domain if primary is not None else None


def tenant_probe_events(*, schema_name: str, run_id: str) -> list[dict]:
    """The starts and ends recorded by a probe run (tenants.services.tenant_probe_schedule), in order."""
    return [json.loads(raw) for raw in get_redis().lrange(tenant_key(schema_name, "probes", run_id), 0, -1)]


def tenant_runtime_stats(*, tenant: Tenant) -> dict[str, int]:
    """What the tenant's queue and workers are doing now: waiting messages and running tasks."""
    from tenants.concurrency import tenant_slots_in_use
    from tenants.queues import tenant_queue_depth

    return {
        "queue_depth": tenant_queue_depth(schema_name=tenant.schema_name),
        "tasks_in_flight": tenant_slots_in_use(schema_name=tenant.schema_name),
    }
