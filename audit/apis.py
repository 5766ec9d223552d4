"""The audit log's API (tenant admin, read-only)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.views import APIView

from audit.selectors import audit_entry_list
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin


@extend_schema_serializer(component_name="AuditEntry")
class AuditEntryOutputSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    action = serializers.CharField()
    target = serializers.CharField()
    changes = serializers.JSONField()


class AuditLogApi(APIView):
    """Every staff write, newest first."""

    permission_classes = [IsTenantAdmin]
    pagination_class = CursorPagination

    class FilterSerializer(serializers.Serializer):
        actor = serializers.CharField(max_length=255, required=False)
        action = serializers.CharField(max_length=64, required=False)
        since = serializers.DateTimeField(required=False)

    @extend_schema(
        parameters=[
            OpenApiParameter("actor", str, required=False, description='The acting user\'s email, or "system".'),
            OpenApiParameter("action", str, required=False, description="An action, e.g. chat.assigned."),
            OpenApiParameter("since", str, required=False, description="ISO 8601 time: entries at or after it."),
        ],
        responses={200: AuditEntryOutputSerializer(many=True)},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = audit_entry_list(
            actor=filters.validated_data.get("actor"),
            action=filters.validated_data.get("action"),
            since=filters.validated_data.get("since"),
        )
        return paginate(
            request=request, view=self, queryset=entries, serializer_class=AuditEntryOutputSerializer, ordering=("-at",)
        )
