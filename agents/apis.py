import hmac

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from agents.selectors import QUEUE_ORDERING, agent_get, agent_list, queue_list, queue_position
from agents.services import (
    STAFF_ROLES,
    agent_access_check,
    agent_create,
    agent_for_user,
    agent_update,
    agents_ensure,
    allocation_settings_get,
    chat_assign,
    chat_resolve,
    qiscus_room_allocate,
    qiscus_room_resolve,
)
from conversations.apis import ChatOutputSerializer
from conversations.models import Chat
from conversations.selectors import application_get, chat_get
from core.models import EMAIL_MAX_LENGTH, User
from core.openapi import ERROR_RESPONSE
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin, IsTenantStaff
from core.serializers import NameField, StrictSerializer

MAX_CUSTOMERS_LIMIT = 1000


@extend_schema_serializer(component_name="Agent")
class AgentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    email = serializers.EmailField(source="user.email")
    name = serializers.CharField(source="user.name")
    role = serializers.ChoiceField(choices=STAFF_ROLES, source="user.role")
    is_online = serializers.BooleanField()
    max_customers = serializers.IntegerField()
    active_chats = serializers.IntegerField()


def _agent_or_404(agent_id: int) -> Agent:
    agent = agent_get(agent_id=agent_id)
    if agent is None:
        user = User.objects.filter(id=agent_id, role__in=STAFF_ROLES).first()
        if user is None:
            raise Http404("No agent with this id.")
        agent_for_user(user=user)
        agent = agent_get(agent_id=agent_id)
    return agent


def _chat_or_404(token: str, number: int) -> Chat:
    application = application_get(token=token)
    chat = chat_get(application=application, number=number) if application is not None else None
    if chat is None:
        raise Http404("No chat with this number.")
    return chat


# --- agents ----------------------------------------------------------------------------------------------


class AgentListCreateApi(APIView):
    pagination_class = CursorPagination

    # Named components: every API's nested "InputSerializer" would otherwise be one "Input" in the schema.
    @extend_schema_serializer(component_name="AgentCreate")
    class InputSerializer(StrictSerializer):
        email = serializers.EmailField(max_length=EMAIL_MAX_LENGTH)
        name = NameField(max_length=255, required=False, allow_blank=True, default="")
        password = serializers.CharField(trim_whitespace=False, write_only=True, style={"input_type": "password"})
        role = serializers.ChoiceField(choices=STAFF_ROLES, required=False, default=User.Role.AGENT)
        max_customers = serializers.IntegerField(min_value=0, max_value=MAX_CUSTOMERS_LIMIT, required=False)
        is_online = serializers.BooleanField(required=False, default=False)

    def get_permissions(self):
        return [IsTenantAdmin()] if self.request.method == "POST" else [IsTenantStaff()]

    @extend_schema(responses={200: AgentOutputSerializer(many=True)})
    def get(self, request):
        # Users made outside this API (the tenant's first admin, the Django admin) get their row here.
        agents_ensure()
        return paginate(
            request=request, view=self, queryset=agent_list(), serializer_class=AgentOutputSerializer, ordering=("user_id",)
        )

    @extend_schema(request=InputSerializer, responses={201: AgentOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        agent = agent_create(**serializer.validated_data)
        return Response(AgentOutputSerializer(agent_get(agent_id=agent.pk)).data, status=status.HTTP_201_CREATED)


class AgentDetailApi(APIView):
    permission_classes = [IsTenantStaff]

    @extend_schema_serializer(component_name="AgentUpdate")
    class InputSerializer(StrictSerializer):
        name = NameField(max_length=255, required=False, allow_blank=True)
        role = serializers.ChoiceField(choices=STAFF_ROLES, required=False)
        max_customers = serializers.IntegerField(min_value=0, max_value=MAX_CUSTOMERS_LIMIT, required=False)
        is_online = serializers.BooleanField(required=False)

    @extend_schema(responses={200: AgentOutputSerializer})
    def get(self, request, agent_id: int):
        return Response(AgentOutputSerializer(_agent_or_404(agent_id)).data)

    @extend_schema(request=InputSerializer, responses={200: AgentOutputSerializer})
    def patch(self, request, agent_id: int):
        agent = _agent_or_404(agent_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        agent_access_check(agent=agent, user=request.user, fields=set(serializer.validated_data))
        agent_update(agent=agent, **serializer.validated_data)
        return Response(AgentOutputSerializer(agent_get(agent_id=agent.pk)).data)


# --- the waiting queue ---------------------------------------------------------------------------------


@extend_schema_serializer(component_name="QueuedChat")
class QueueItemSerializer(ChatOutputSerializer):
    application = serializers.CharField(source="application.token")
    position = serializers.IntegerField()


class QueueListApi(APIView):
    """Waiting chats, next served first, each with its `position` (1 = next). Cursor-paginated like every
    list; positions are those at the moment each page is read (the queue moves between pages)."""

    permission_classes = [IsTenantStaff]
    pagination_class = CursorPagination

    @extend_schema(responses={200: QueueItemSerializer(many=True)})
    def get(self, request):
        paginator = CursorPagination()
        paginator.ordering = QUEUE_ORDERING
        page = paginator.paginate_queryset(queue_list(), request, view=self)
        first = 1 if not page or not request.query_params.get(paginator.cursor_query_param) else queue_position(chat=page[0])
        for offset, chat in enumerate(page):
            chat.position = first + offset
        return paginator.get_paginated_response(QueueItemSerializer(page, many=True).data)


# --- resolve and assign (paths under /api/applications/{token}/chats/{n}/) ------------------------------


class ChatResolveApi(APIView):
    """The assigned agent or an admin resolves a chat; the freed slot serves the next waiting chat."""

    permission_classes = [IsTenantStaff]

    @extend_schema(request=None, responses={200: ChatOutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request, token: str, number: int):
        chat = chat_resolve(chat=_chat_or_404(token, number), by=request.user)
        return Response(ChatOutputSerializer(chat).data)


class ChatAssignApi(APIView):
    """An admin gives a chat to an agent (manual assignment, or a transfer). The agent must be online and
    below its max_customers (409 otherwise); a resolved chat cannot be assigned (409)."""

    permission_classes = [IsTenantAdmin]

    @extend_schema_serializer(component_name="ChatAssign")
    class InputSerializer(serializers.Serializer):
        agent_id = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={200: ChatOutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request, token: str, number: int):
        chat = _chat_or_404(token, number)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = User.objects.filter(id=serializer.validated_data["agent_id"], role__in=STAFF_ROLES).first()
        if user is None:
            raise serializers.ValidationError({"agent_id": ["No agent with this id."]})
        chat = chat_assign(chat=chat, agent=agent_for_user(user=user))
        return Response(ChatOutputSerializer(chat).data)


# --- Qiscus adapter ------------------------------------------------------------------------------------------

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
