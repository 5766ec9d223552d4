import hmac

from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django_tenants.utils import schema_context
from drf_spectacular.utils import extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rest_framework import serializers, status
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.selectors import inbound_event_list
from core.models import EMAIL_MAX_LENGTH, User
from core.pagination import CursorPagination, paginate
from core.permissions import IsPlatformAdmin
from core.serializers import NameField, StrictIntegerField
from tenants.metrics import TenantMetricsCollector
from tenants.models import MAX_TENANT_CONCURRENCY, Tenant
from tenants.selectors import tenant_get, tenant_list, tenant_primary_domain, tenant_runtime_stats
from tenants.services import (
    tenant_admin_reset,
    tenant_concurrency_set,
    tenant_create,
    tenant_delete,
    tenant_event_schedule,
)


class TenantOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    domain = serializers.SerializerMethodField()
    concurrency = serializers.IntegerField()
    created_at = serializers.DateTimeField()

    def get_domain(self, tenant: Tenant) -> str | None:
        return tenant_primary_domain(tenant=tenant)


def _tenant_or_404(tenant_id: int) -> Tenant:
    tenant = tenant_get(tenant_id=tenant_id)
    if tenant is None:
        raise Http404("No tenant with this id.")
    return tenant


class TenantListCreateApi(APIView):
    permission_classes = [IsPlatformAdmin]
    pagination_class = CursorPagination  # read by the OpenAPI generator; paginate() does the work

    class InputSerializer(serializers.Serializer):
        name = NameField(max_length=255)
        slug = serializers.CharField(max_length=40)
        admin_email = serializers.EmailField(max_length=EMAIL_MAX_LENGTH)
        admin_password = serializers.CharField(trim_whitespace=False, max_length=128)
        concurrency = serializers.IntegerField(min_value=1, max_value=MAX_TENANT_CONCURRENCY, default=3)

    @extend_schema(responses={200: TenantOutputSerializer(many=True)})
    def get(self, request):
        return paginate(
            request=request, view=self, queryset=tenant_list(), serializer_class=TenantOutputSerializer, ordering=("id",)
        )

    @extend_schema(request=InputSerializer, responses={201: TenantOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = tenant_create(**serializer.validated_data)
        return Response(TenantOutputSerializer(_tenant_or_404(tenant.id)).data, status=status.HTTP_201_CREATED)


class TenantAdminResetApi(APIView):
    """Makes `email` an active admin of the tenant with `password` (created if the tenant has no such user;
    otherwise promoted, re-activated, its token revoked and its sign-in lockout lifted): the way back into a
    tenant that lost its admins. 201 when the user was created, 200 when an existing one was restored."""

    permission_classes = [IsPlatformAdmin]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TenantAdminResetInput"

        email = serializers.EmailField(max_length=EMAIL_MAX_LENGTH)
        password = serializers.CharField(trim_whitespace=False, max_length=128, write_only=True)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TenantAdminReset"

        id = serializers.IntegerField()
        email = serializers.EmailField()
        role = serializers.CharField()
        is_active = serializers.BooleanField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, 201: OutputSerializer})
    def post(self, request, tenant_id: int):
        tenant = _tenant_or_404(tenant_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, created = tenant_admin_reset(tenant=tenant, **serializer.validated_data)
        return Response(self.OutputSerializer(user).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class TenantDetailApi(APIView):
    permission_classes = [IsPlatformAdmin]

    class OutputSerializer(TenantOutputSerializer):
        queue_depth = serializers.IntegerField(help_text="Tasks waiting in the tenant's queue.")
        tasks_in_flight = serializers.IntegerField(help_text="The tenant's tasks running now, across all workers.")

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, tenant_id: int):
        tenant = _tenant_or_404(tenant_id)
        stats = tenant_runtime_stats(tenant=tenant)
        tenant.queue_depth, tenant.tasks_in_flight = stats["queue_depth"], stats["tasks_in_flight"]
        return Response(self.OutputSerializer(tenant).data)

    @extend_schema(responses={204: None})
    def delete(self, request, tenant_id: int):
        tenant_delete(tenant=_tenant_or_404(tenant_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TenantConcurrencyApi(APIView):
    """How many of the tenant's tasks may run at once across all workers; effective without a restart."""

    permission_classes = [IsPlatformAdmin]

    class InputSerializer(serializers.Serializer):
        workers = StrictIntegerField(min_value=1, max_value=MAX_TENANT_CONCURRENCY)

    class OutputSerializer(serializers.Serializer):
        workers = serializers.IntegerField(source="concurrency")

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request, tenant_id: int):
        tenant = _tenant_or_404(tenant_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = tenant_concurrency_set(tenant=tenant, workers=serializer.validated_data["workers"])
        return Response(self.OutputSerializer(tenant).data)


class TenantMessageListCreateApi(APIView):
    """The tenant's event log: publish to its queue, list what its consumers persisted."""

    permission_classes = [IsPlatformAdmin]
    pagination_class = CursorPagination

    class InputSerializer(serializers.Serializer):
        payload = serializers.DictField(allow_empty=True)

    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        payload = serializers.JSONField()
        created_at = serializers.DateTimeField()
        status = serializers.CharField(help_text="processed; accepted (a failed attempt awaits its retry); dead.")
        attempts = serializers.IntegerField()
        last_error = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={202: inline_serializer("TenantMessageAccepted", fields={"id": serializers.UUIDField()})},
    )
    def post(self, request, tenant_id: int):
        tenant = _tenant_or_404(tenant_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        event_id = tenant_event_schedule(tenant=tenant, payload=serializer.validated_data["payload"])
        return Response({"id": str(event_id)}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request, tenant_id: int):
        tenant = _tenant_or_404(tenant_id)
        with schema_context(tenant.schema_name):
            return paginate(
                request=request,
                view=self,
                queryset=inbound_event_list(),
                serializer_class=self.OutputSerializer,
                ordering=("created_at", "id"),
            )


def _metrics_authorized(request) -> bool:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        expected = settings.METRICS_BEARER_TOKEN
        return bool(expected) and hmac.compare_digest(credentials.strip().encode(), expected.encode())
    try:
        authenticated = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return authenticated is not None and authenticated[0].role == User.Role.PLATFORM_ADMIN


def tenant_metrics(request):
    """Prometheus exposition of per-tenant queue depth, tasks in flight, limits, outcomes and durations.

    Platform host only. Tenant names and volumes are business data, so it needs a platform admin's token
    (`Authorization: Token <key>`, Prometheus' `authorization: {type: Token}`) or, when
    METRICS_BEARER_TOKEN is set, `Authorization: Bearer <that>` for a scraper without a user account.
    """
    if not _metrics_authorized(request):
        response = JsonResponse({"detail": "Authentication credentials were not provided or are invalid."}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TenantMetricsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
