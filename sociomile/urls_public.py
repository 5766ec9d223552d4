"""The platform host (`BASE_DOMAIN`): tenant lifecycle and platform admin."""

from django.contrib import admin
from django.urls import include, path

from core.urls import host_urlpatterns
from tenants.apis import tenant_metrics

urlpatterns = [
    *host_urlpatterns(urlconf="sociomile.urls_public"),
    path("api/", include("tenants.urls")),
    path("admin/", admin.site.urls),
    path("metrics", tenant_metrics, name="metrics"),
]

handler400 = "core.apis.bad_request"
handler403 = "core.apis.permission_denied"
handler404 = "core.apis.not_found"
handler500 = "core.apis.server_error"
