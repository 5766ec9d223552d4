from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.http.request import split_domain_port
from django.urls import set_urlconf

from core.routing import routing_listener_ensure
from tenants.selectors import tenant_get_for_hostname


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
                return JsonResponse({"detail": f'No tenant is served at host "{hostname}".'}, status=404)
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


class UnstorableInputMiddleware:
    """The input rule of core/parsers.py for what comes before the body: a path or a query string holding a
    NUL character (`%00`) is a 400. PostgreSQL refuses NUL in text, so any lookup by such a value (an
    application token in the path, a filter, a search, also in the admin) was a DataError, a 500. Lone
    surrogates cannot get here: Django decodes the path and query string as UTF-8, replacing what does not
    decode. Headers are left to their readers: credentials are compared, not looked up with a NUL (401 for
    anything wrong), and the host is validated by Django.

    First in MIDDLEWARE: nothing has queried yet.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            return JsonResponse(
                {"detail": "The request's path or query string holds a NUL character (%00), which cannot be stored."},
                status=400,
            )
        return self.get_response(request)
