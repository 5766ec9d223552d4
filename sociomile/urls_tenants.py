"""A tenant's host (`<slug>.<BASE_DOMAIN>`): the product API and the tenant's own admin."""

from django.urls import include, path

from core.admin import tenant_admin_site
from core.urls import host_urlpatterns

urlpatterns = [
    *host_urlpatterns(urlconf="sociomile.urls_tenants"),
    path("api/", include("conversations.urls")),
    path("api/", include("agents.urls")),
    path("api/", include("integrations.qiscus.urls")),
    path("admin/", tenant_admin_site.urls),
    path("api/", include("scheduler.urls")),
    path("api/", include("events.urls")),
    path("api/", include("reports.urls")),
    path("api/", include("stream.urls")),
    path("api/", include("routing.urls")),
    path("api/", include("workspace.urls")),
    path("api/", include("contacts.urls")),
    path("api/", include("audit.urls")),
]

handler400 = "core.apis.bad_request"
handler403 = "core.apis.permission_denied"
handler404 = "core.apis.not_found"
handler500 = "core.apis.server_error"
