import functools
import logging
import time

from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.db import connection
from django.http import JsonResponse
from django.http.request import split_domain_port
from django.urls import set_urlconf
from django.utils.functional import SimpleLazyObject, empty
from django_tenants.utils import get_public_schema_name

from core.actors import actor_request_bind
from core.logging import request_id_choose, request_id_var
from core.routing import routing_listener_ensure
from tenants.metrics import http_server_error_count
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


LIVENESS_PATH = "/health/live"


class LivenessMiddleware:
    """Liveness: `GET /health/live` is 200 `{"status": "ok"}` whenever this process serves requests, on any Host.

    Answered here, before the host lookup (which reads PostgreSQL and starts the routing cache's Redis listener):
    it touches no dependency, so a PostgreSQL or Redis outage never makes a process manager restart web processes
    that are fine and would only come back to the same outage. Whether the dependencies answer is `/health`
    (readiness, core.apis.health), routed as every other path.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info != LIVENESS_PATH:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        return JsonResponse({"status": "ok"})


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


class UnstorableInputMiddleware:
    """The input rule of core/parsers.py for what comes before the body: a path or a query string holding a
    NUL character (`%00`) is a 400. PostgreSQL refuses NUL in text, so any lookup by such a value (an
    application token in the path, a filter, a search, also in the admin) was a DataError, a 500. Lone
    surrogates cannot get here: Django decodes the path and query string as UTF-8, replacing what does not
    decode. Headers are left to their readers: credentials are compared, or refused before a lookup when they
    hold a NUL (core/authentication.py; 401 for anything wrong), and the host is validated by Django.

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


class MethodNotAllowedFirstMiddleware:
    """A method an API view does not declare is a 405 before its authentication runs. DRF authenticates
    first, so `GET` on a Qiscus webhook without its key was a 401, which tells a client to fix its
    credentials when no credential makes the method exist (and is not what the OpenAPI schema promises).
    Same body and Allow header as DRF's 405."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        view_class = getattr(view_func, "cls", None)  # set by DRF's APIView.as_view()
        if view_class is None:
            return None
        declared = _declared_methods(view_class)
        if request.method.lower() in declared:
            return None
        response = JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
        response["Allow"] = ", ".join(name.upper() for name in declared)
        return response


@functools.cache
def _declared_methods(view_class) -> tuple[str, ...]:
    declared = [name for name in view_class.http_method_names if hasattr(view_class, name)]
    if "get" in declared and "head" not in declared:
        declared.append("head")  # Django's View.setup answers HEAD with get
    return tuple(declared)


# How much of an unread body is read and discarded after the response (so the connection stays usable), and
# for how long; and the size below which gunicorn drains an unread body itself.
UNREAD_BODY_DRAIN_MAX_BYTES = 64 * 1024 * 1024
UNREAD_BODY_DRAIN_SECONDS = 10.0
SERVER_DRAINS_BYTES = 64 * 1024


class UnreadBodyDrainMiddleware:
    """After a response given without reading the request's body (a 413 for a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE, refused by its Content-Length; a 401, 403 or 404 decided before the view
    reads it), reads and discards that body, within a byte and time budget.

    The client sent it all on a keep-alive connection: gunicorn drains at most 64 KiB of an unread body and
    then closes the connection, after a response that announced keep-alive, so the client's next request
    on it failed (reset). A WSGI application cannot ask for `Connection: close` instead (a hop-by-hop
    header: gunicorn drops it). Past the budget, gunicorn closes as before: a client that sends more than
    64 MiB to an endpoint that takes 1 MiB gets its answer and a closed connection.

    First in MIDDLEWARE: it sees the final response of every view, the admin's included.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > SERVER_DRAINS_BYTES and not hasattr(request, "_body"):  # _body: read whole already
            _body_discard(request)
        return response


def _body_discard(request) -> None:
    # Django's own view of wsgi.input, bounded by Content-Length and aware of what was read already: reading
    # the raw input past the body would wait for bytes the client never sends (a blocking read).
    stream = getattr(request, "_stream", None)
    if stream is None:
        return
    deadline = time.monotonic() + UNREAD_BODY_DRAIN_SECONDS
    drained = 0
    try:
        while drained < UNREAD_BODY_DRAIN_MAX_BYTES and time.monotonic() < deadline:
            chunk = stream.read(64 * 1024)
            if not chunk:
                return
            drained += len(chunk)
    except OSError:  # the client went away: nothing left to keep usable
        return


class ActorMiddleware:
    """Binds the request as the actor's source for the audit log (core.actors): set once here, read by
    `audit_record` when a service writes, so no service takes an `actor` argument."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with actor_request_bind(request):
            return self.get_response(request)


class LazyMessageMiddleware(MessageMiddleware):
    """django.contrib.messages' middleware, whose storage is built the first time the request's messages are used.

    Only the admin adds or shows messages, but Django's middleware built the storage (a cookie storage with its
    signer and a session storage) on every request, the API's included, and asked it after the response to store
    what it never held. Here the request's `_messages` is a lazy object: the admin's first `add_message` or
    template read builds the same storage, and a storage that was built is updated exactly as Django does. One
    never built was never read or written, so there is nothing to store (Django's `update` would do nothing).
    """

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request, response):
        messages = getattr(request, "_messages", None)
        if isinstance(messages, SimpleLazyObject) and messages._wrapped is empty:
            return response
        return super().process_response(request, response)


access_logger = logging.getLogger("sociomile.access")


class RequestIdMiddleware:
    """Names each request: its id (core.logging) is the incoming X-Request-ID when sane, else a new one; it
    is on every log line written while the request runs, on the tasks the request enqueues, and in the
    response's X-Request-ID. With the `sociomile.access` logger at INFO (LOG_ACCESS=1) it also writes one
    access line per request (method, path, status, duration), the line that carries the id when nothing
    else logs. And it counts the 5xx answers of each tenant's host for /metrics (tenants.metrics).

    Outermost in MIDDLEWARE: every response gets the header, an early 400 or 404 included."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_choose(request.META.get("HTTP_X_REQUEST_ID"))
        token = request_id_var.set(request_id)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            if response.status_code >= 500:
                http_server_error_count(schema_name=connection.schema_name)
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "%s %s %s", request.method, request.path, response.status_code,
                    extra={"method": request.method, "path": request.path, "status": response.status_code,
                           "duration_ms": round((time.monotonic() - started) * 1000, 1)},
                )  # fmt: skip
            return response
        finally:
            request_id_var.reset(token)
