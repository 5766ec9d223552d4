"""URLs served on every host: health, sign-in, OpenAPI schema and docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.apis import AuthMeApi, AuthTokenApi, health


def host_urlpatterns(*, urlconf: str) -> list:
    # drf-spectacular reads ROOT_URLCONF unless told otherwise: each host documents its own API.
    return [
        # /health/live (liveness) never reaches a URL conf: core.middleware.LivenessMiddleware answers it first.
        path("health", health, name="health"),
        path("api/auth/token", AuthTokenApi.as_view(), name="auth-token"),
        path("api/auth/me", AuthMeApi.as_view(), name="auth-me"),
        path("api/schema/", SpectacularAPIView.as_view(urlconf=urlconf), name="schema"),
        path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    ]
