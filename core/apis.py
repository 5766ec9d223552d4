import sys

import amqp.exceptions
import kombu.exceptions
import redis
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.db import connection
from django.http import JsonResponse
from django_tenants.utils import get_public_schema_name
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import RequestBodyTooLarge, SignInRefused
from core.middleware import tenant_gone_response
from core.models import User
from core.openapi import ERROR_RESPONSE
from core.redis import get_redis
from core.services import user_sign_in, user_token_get_or_create, user_token_revoke


class AuthTokenApi(APIView):
    """Exchanges an email and password for an API token valid on this host only (POST), and revokes the token
    a request carries (DELETE: signing out)."""

    def _signing_out(self) -> bool:
        # No request yet while drf-spectacular builds its mock one for the schema.
        return getattr(self.request, "method", None) == "DELETE"

    def get_authenticators(self):
        # Signing in takes no credentials; signing out takes the token it revokes.
        return super().get_authenticators() if self._signing_out() else []

    def get_permissions(self):
        return [IsAuthenticated()] if self._signing_out() else [AllowAny()]

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        role = serializers.ChoiceField(choices=User.Role.choices)

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 429: ERROR_RESPONSE},
        auth=[],
        description="Exchanges an email and password for an API token valid on this host only. Failed attempts "
        "are limited per email and per client address: past a limit, 429 with Retry-After.",
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Users are looked up in this host's schema: a tenant account cannot sign in on another host.
        user = user_sign_in(
            request=request,
            email=serializer.validated_data["email"],
            password=serializer.validated_data["password"],
        )
        if user is None or (user.role == User.Role.PLATFORM_ADMIN and connection.schema_name != get_public_schema_name()):
            # Raised, not returned, so the exception handler sees it (a tenant deleted under this request is a
            # 404). A platform account never signs in on a tenant host: it could only be read there from the
            # public schema's table, through a tenant schema dropped under the request.
            raise SignInRefused()
        token = user_token_get_or_create(user=user)
        return Response(self.OutputSerializer({"token": token.key, "role": user.role}).data)

    @extend_schema(
        request=None,
        responses={204: None},
        description="Signs out: revokes the token this request carries, for every client using it on this host.",
    )
    def delete(self, request):
        # The user's one token on this host: every client signed in with it is signed out. The next sign-in
        # makes a new one.
        user_token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuthMeApi(APIView):
    """Who the token belongs to, on this host."""

    class OutputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        name = serializers.CharField()
        role = serializers.ChoiceField(choices=User.Role.choices)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request):
        return Response(self.OutputSerializer(request.user).data)


def health(request):
    """Readiness: 200 when PostgreSQL and Redis answer, else 503 naming what failed. No authentication.
    Liveness, which checks no dependency, is /health/live (core.middleware.LivenessMiddleware)."""
    checks = {"database": "ok", "redis": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        checks["database"] = f"error: {error.__class__.__name__}"
    try:
        get_redis().ping()
    except Exception as error:
        checks["redis"] = f"error: {error.__class__.__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)


def bad_request(request, exception=None):
    """Django's 400 (a SuspiciousOperation outside DRF: a disallowed Host, a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE read by a plain Django view) as JSON, never the exception's text."""
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse({"detail": RequestBodyTooLarge.default_detail}, status=413)
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request, exception=None):
    return JsonResponse({"detail": "You do not have permission to perform this action."}, status=403)


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def _unavailable_dependency(error: BaseException | None) -> str | None:
    """"database", "redis" or "broker" when the error (or what caused it) is that dependency being unreachable."""
    while error is not None:
        # What a publish raises once Celery's own retries could not reach RabbitMQ.
        if isinstance(error, (kombu.exceptions.OperationalError, amqp.exceptions.RecoverableConnectionError)):
            return "broker"
        if isinstance(error, (DatabaseOperationalError, DatabaseInterfaceError)):
            return "database"
        if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
            return "redis"
        error = error.__cause__ or error.__context__
    return None


def server_error(request):
    """Django's handler500, also for errors raised before any view (the host lookup reads the database).

    A dependency that is down (PostgreSQL restarting, Redis or the broker unreachable) is a 503 with Retry-After naming
    it, not a 500: nothing was accepted, and the client should retry. /health keeps its own body then, so
    it names the failed dependency on a tenant host too, even when the host could not be looked up.
    """
    dependency = _unavailable_dependency(sys.exception())
    if dependency is None:
        # A tenant deleted while this request ran (its schema dropped under it) is gone, not broken.
        return tenant_gone_response(request) or JsonResponse({"detail": "Internal server error."}, status=500)
    if request.path == "/health":
        response = health(request)
        if response.status_code == 503:
            return response
    response = JsonResponse({"detail": f"Service temporarily unavailable ({dependency}); retry shortly."}, status=503)
    response["Retry-After"] = "1"
    return response
