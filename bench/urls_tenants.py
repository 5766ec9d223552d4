from django.http import JsonResponse
from django.urls import path

from sociomile.urls_tenants import handler404, handler500, urlpatterns as tenant_urlpatterns  # noqa: F401


def ping(request):
    """The cheapest endpoint of the same server: tenant middleware, routing, a JSON body; no database."""
    return JsonResponse({"pong": True})


urlpatterns = [path("bench/ping", ping), *tenant_urlpatterns]
