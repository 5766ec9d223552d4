"""Qiscus' webhooks (authenticated by the tenant's integration key) and the admins' integration settings."""

import hmac

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.services import allocation_settings_get
from conversations.apis import ChatOutputSerializer
from core.openapi import ERROR_RESPONSE
from core.permissions import IsTenantAdmin
from integrations.qiscus.services import qiscus_room_allocate, qiscus_room_resolve

INTEGRATION_KEY_HEADER = "X-Sociomile-Integration-Key"


class IntegrationKeyAuthentication(BaseAuthentication):
    """Qiscus' webhooks carry the tenant's integration key in a header (no user behind them)."""

    def authenticate(self, request):
        given = request.headers.get(INTEGRATION_KEY_HEADER, "")
        expected = allocation_settings_get().qiscus_integration_key
        # Constant-time: the comparison must not tell an attacker how much of the key was right.
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise exceptions.AuthenticationFailed(f"Missing or wrong {INTEGRATION_KEY_HEADER}.")
        return (None, "qiscus")

    def authenticate_header(self, request):
        return INTEGRATION_KEY_HEADER  # makes DRF answer 401, not 403


class _QiscusWebhookApi(APIView):
    authentication_classes = [IntegrationKeyAuthentication]
    permission_classes = [AllowAny]

    @staticmethod
    def _check_app(app_id) -> None:
        if settings.QISCUS_APP_ID and app_id not in (None, "") and str(app_id) != settings.QISCUS_APP_ID:
            raise serializers.ValidationError({"app_id": ["Not this tenant's Qiscus app."]})


class QiscusIntegrationApi(APIView):
    permission_classes = [IsTenantAdmin]

    @extend_schema_serializer(component_name="QiscusIntegration")
    class OutputSerializer(serializers.Serializer):
        integration_key = serializers.CharField()
        agent_allocation_url = serializers.CharField()
        mark_as_resolved_url = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request):
        return Response(
            {
                "integration_key": allocation_settings_get().qiscus_integration_key,
                "agent_allocation_url": request.build_absolute_uri("/api/integrations/qiscus/agent-allocation"),
                "mark_as_resolved_url": request.build_absolute_uri("/api/integrations/qiscus/mark-as-resolved"),
            }
        )


ALLOCATION_ANSWER = inline_serializer(
    "QiscusAllocationAccepted",
    fields={"room_id": serializers.CharField(), "application": serializers.CharField(), "chat_number": serializers.IntegerField()},
)


class QiscusAgentAllocationApi(_QiscusWebhookApi):
    """Qiscus' Custom Agent Allocation webhook: the room joins the FIFO queue as a waiting chat.

    202 when a chat was queued for the room, 200 when the room already has an open chat (Qiscus repeats
    the webhook for each customer message until the room has an agent)."""

    @extend_schema_serializer(component_name="QiscusAgentAllocation")
    class InputSerializer(serializers.Serializer):
        app_id = serializers.CharField(required=False, allow_null=True, allow_blank=True)
        room_id = serializers.CharField(max_length=255)
        candidate_agent = serializers.JSONField(required=False, allow_null=True)

    @extend_schema(
        request=InputSerializer,
        # 202: a chat was queued for the room; 200: the room already had an open chat.
        responses={202: ALLOCATION_ANSWER, 200: ALLOCATION_ANSWER},
        auth=[],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        self._check_app(data.get("app_id"))
        application, number, created = qiscus_room_allocate(
            room_id=data["room_id"], candidate_agent=data.get("candidate_agent")
        )
        return Response(
            {"room_id": data["room_id"], "application": application.token, "chat_number": number},
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )


@extend_schema_serializer(component_name="QiscusService")
class QiscusServiceSerializer(serializers.Serializer):
    room_id = serializers.CharField(max_length=255)


class QiscusMarkAsResolvedApi(_QiscusWebhookApi):
    """Qiscus' Mark As Resolved webhook: resolves the room's chat and serves the next waiting one."""

    @extend_schema_serializer(component_name="QiscusMarkAsResolved")
    class InputSerializer(serializers.Serializer):
        app_id = serializers.CharField(required=False, allow_null=True, allow_blank=True)
        # Nested, so the schema says that `service.room_id` is required (Qiscus sends more keys: ignored).
        service = QiscusServiceSerializer()
        resolved_by = serializers.JSONField(required=False, allow_null=True)

    # 409 with Retry-After: the room's chat was still being created; it is resolved as soon as it exists.
    @extend_schema(
        request=InputSerializer, responses={200: ChatOutputSerializer, 404: ERROR_RESPONSE, 409: ERROR_RESPONSE}, auth=[]
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self._check_app(serializer.validated_data.get("app_id"))
        chat = qiscus_room_resolve(
            room_id=serializer.validated_data["service"]["room_id"], resolved_by=serializer.validated_data.get("resolved_by")
        )
        if chat is None:
            raise Http404("No chat for this room.")
        return Response(ChatOutputSerializer(chat).data)
