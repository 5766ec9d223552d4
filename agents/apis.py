from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
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
    chat_assign,
    chat_resolve,
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
