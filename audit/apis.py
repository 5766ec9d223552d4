"""The audit log's API (tenant admin, read-only)."""

from drf_spectacular.utils import extend_schema, extend_schema_serializer
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
        # Blank is "no filter": DRF reads an empty query parameter of an optional field as absent anyway.
        actor = serializers.CharField(max_length=255, required=False, allow_blank=True, help_text='The acting user\'s email, or "system".')
        action = serializers.CharField(max_length=64, required=False, allow_blank=True, help_text="An action, e.g. chat.assigned.")
        since = serializers.DateTimeField(required=False, help_text="ISO 8601 time: entries at or after it.")

    @extend_schema(parameters=[FilterSerializer], responses={200: AuditEntryOutputSerializer(many=True)})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = audit_entry_list(
            actor=filters.validated_data.get("actor") or None,
            action=filters.validated_data.get("action") or None,
            since=filters.validated_data.get("since"),
        )
        return paginate(
            request=request, view=self, queryset=entries, serializer_class=AuditEntryOutputSerializer, ordering=("-at",)
        )
