from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.http.request import split_domain_port
from django.urls import set_urlconf
from django_tenants.utils import get_public_schema_name

from core.routing import routing_listener_ensure
from tenants.selectors import tenant_get_for_hostname, tenant_is_served


def _unknown_host(hostname: str) -> JsonResponse:
    return JsonResponse({"detail": f'No tenant is served at host "{hostname}".'}, status=404)


def tenant_gone_response(request) -> JsonResponse | None:
    """The unknown-host 404 for a request whose tenant was deleted, or began being deleted, while it ran (its
    schema dropped under it: a query fails, or falls through to the public schema's tables and a token or a
    password is not found); None if its tenant is still served, or it has none. Called on error paths only:
    it reads the tenants table."""
    tenant = getattr(request, "tenant", None)
    tenant_id = getattr(tenant, "pk", None)
    if tenant_id is None or getattr(tenant, "schema_name", None) == get_public_schema_name():
        return None
    try:
        if tenant_is_served(tenant_id=tenant_id):
            return None
    except Exception:
        return None  # the database itself is the problem: the caller answers as it would have
    hostname, _port = split_domain_port(request.get_host())
    return _unknown_host(hostname)


class TenantHostMiddleware:
    """Picks the schema and URL conf from the Host header.

    `<BASE_DOMAIN>` is the platform (public schema, platform URL conf); any domain in the tenants_domain
    table (`<slug>.<BASE_DOMAIN>` by default) is that tenant; every other host is 404 JSON, so nothing
    past this point ever runs without a known schema.

    The host lookup is served from the process-local routing cache (core.routing), whose listener the
    first request of each process starts.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        routing_listener_ensure()
        hostname, _port = split_domain_port(request.get_host())
        if hostname == settings.BASE_DOMAIN:
            connection.set_schema_to_public()
            request.tenant = connection.tenant  # django-tenants: a stand-in "public" tenant
            request.urlconf = settings.PUBLIC_SCHEMA_URLCONF
        else:
            # The domains table exists only in the public schema, which is on every search path, so the
            # lookup needs no switch to public first.
            tenant = tenant_get_for_hostname(hostname=hostname)
            if tenant is None:
                connection.set_schema_to_public()
                return _unknown_host(hostname)
            request.tenant = tenant
            if connection.schema_name == tenant.schema_name and connection.include_public_schema:
                # Already on this tenant's path (the thread's previous request was for it). set_tenant() would
                # forget the path it set and send `SET search_path` again before the next query.
                connection.tenant = tenant
            else:
                connection.set_tenant(tenant)
            request.urlconf = settings.ROOT_URLCONF
        set_urlconf(request.urlconf)
        return self.get_response(request)
