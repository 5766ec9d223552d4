from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.models import Application, Chat, Message
from conversations.selectors import (
    application_get,
    application_list,
    chat_get,
    chat_list,
    message_get,
    message_list,
    message_search,
)
from conversations.services import application_create, application_update, chat_create, message_create, message_update
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin, IsTenantStaff

# --- serializers shared by several endpoints -----------------------------------------------------------------


class ApplicationOutputSerializer(serializers.Serializer):
    token = serializers.CharField()
    name = serializers.CharField()
    chats_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ChatOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Chat.Status.choices)
    customer_id = serializers.CharField(allow_null=True)
    assigned_agent = serializers.IntegerField(source="assigned_agent_id", allow_null=True)
    messages_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    assigned_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)


class MessageOutputSerializer(serializers.Serializer):
    chat_number = serializers.IntegerField(source="chat.number")
    number = serializers.IntegerField()
    body = serializers.CharField()
    sender = serializers.ChoiceField(choices=Message.Sender.choices)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ApplicationNameSerializer(serializers.Serializer):
    name = serializers.CharField(min_length=1, max_length=255)


class MessageBodySerializer(serializers.Serializer):
    body = serializers.CharField(min_length=1, max_length=settings.MESSAGE_MAX_LENGTH, trim_whitespace=False)


def _application_or_404(token: str) -> Application:
    application = application_get(token=token)
    if application is None:
        raise Http404("No application with this token.")
    return application


def _chat_or_404(token: str, number: int) -> Chat:
    chat = chat_get(application=_application_or_404(token), number=number)
    if chat is None:
        raise Http404("No chat with this number.")
    return chat


def _message_or_404(token: str, chat_number: int, number: int) -> Message:
    message = message_get(chat=_chat_or_404(token, chat_number), number=number)
    if message is None:
        raise Http404("No message with this number.")
    return message


# --- applications (staff) ---------------------------------------------------------------------------------


class ApplicationListCreateApi(APIView):
    pagination_class = CursorPagination

    class CreatedOutputSerializer(ApplicationOutputSerializer):
        webhook_secret = serializers.CharField()

    def get_permissions(self):
        return [IsTenantAdmin()] if self.request.method == "POST" else [IsTenantStaff()]

    @extend_schema(responses={200: ApplicationOutputSerializer(many=True)})
    def get(self, request):
        return paginate(request=request, view=self, queryset=application_list(), serializer_class=ApplicationOutputSerializer)

    @extend_schema(request=ApplicationNameSerializer, responses={201: CreatedOutputSerializer})
    def post(self, request):
        serializer = ApplicationNameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        application = application_create(**serializer.validated_data)
        return Response(self.CreatedOutputSerializer(application).data, status=status.HTTP_201_CREATED)


class ApplicationDetailApi(APIView):
    def get_permissions(self):
        return [IsTenantStaff()] if self.request.method == "GET" else [IsTenantAdmin()]

    @extend_schema(responses={200: ApplicationOutputSerializer})
    def get(self, request, token: str):
        return Response(ApplicationOutputSerializer(_application_or_404(token)).data)

    @extend_schema(request=ApplicationNameSerializer, responses={200: ApplicationOutputSerializer})
    def put(self, request, token: str):
        return self._update(request, token, partial=False)

    @extend_schema(request=ApplicationNameSerializer, responses={200: ApplicationOutputSerializer})
    def patch(self, request, token: str):
        return self._update(request, token, partial=True)

    def _update(self, request, token: str, *, partial: bool):
        application = _application_or_404(token)
        serializer = ApplicationNameSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        if "name" in serializer.validated_data:
            application = application_update(application=application, name=serializer.validated_data["name"])
        return Response(ApplicationOutputSerializer(application).data)


# --- chats and messages (client API: the application token in the path is the credential) ----------------


class ChatListCreateApi(APIView):
    permission_classes = [AllowAny]
    pagination_class = CursorPagination

    class InputSerializer(serializers.Serializer):
        customer_id = serializers.CharField(min_length=1, max_length=255, required=False, allow_null=True)

    @extend_schema(
        parameters=[OpenApiParameter("status", enum=Chat.Status.values, required=False)],
        responses={200: ChatOutputSerializer(many=True)},
    )
    def get(self, request, token: str):
        chat_status = request.query_params.get("status")
        if chat_status is not None and chat_status not in Chat.Status.values:
            raise serializers.ValidationError({"status": [f"Must be one of: {', '.join(Chat.Status.values)}."]})
        chats = chat_list(application=_application_or_404(token), status=chat_status)
        return paginate(request=request, view=self, queryset=chats, serializer_class=ChatOutputSerializer, ordering=("number",))

    @extend_schema(
        request=InputSerializer, responses={202: inline_serializer("ChatAccepted", fields={"number": serializers.IntegerField()})}
    )
    def post(self, request, token: str):
        application = _application_or_404(token)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        number = chat_create(application=application, customer_id=serializer.validated_data.get("customer_id"))
        return Response({"number": number}, status=status.HTTP_202_ACCEPTED)


class ChatDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: ChatOutputSerializer})
    def get(self, request, token: str, number: int):
        return Response(ChatOutputSerializer(_chat_or_404(token, number)).data)


class MessageListCreateApi(APIView):
    permission_classes = [AllowAny]
    pagination_class = CursorPagination

    @extend_schema(responses={200: MessageOutputSerializer(many=True)})
    def get(self, request, token: str, number: int):
        messages = message_list(chat=_chat_or_404(token, number)).select_related("chat")
        return paginate(
            request=request, view=self, queryset=messages, serializer_class=MessageOutputSerializer, ordering=("number",)
        )

    @extend_schema(
        request=MessageBodySerializer,
        responses={
            202: inline_serializer(
                "MessageAccepted", fields={"chat_number": serializers.IntegerField(), "number": serializers.IntegerField()}
            )
        },
    )
    def post(self, request, token: str, number: int):
        application = _application_or_404(token)
        serializer = MessageBodySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # A tenant user's token makes it an agent's reply; without one it is the customer writing.
        user = request.user if request.user is not None and getattr(request.user, "is_tenant_staff", False) else None
        message_number = message_create(
            application=application,
            chat_number=number,
            body=serializer.validated_data["body"],
            sender=Message.Sender.AGENT if user is not None else Message.Sender.CUSTOMER,
            author=user,
        )
        if message_number is None:
            raise Http404("No chat with this number.")
        return Response({"chat_number": number, "number": message_number}, status=status.HTTP_202_ACCEPTED)


class MessageDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: MessageOutputSerializer})
    def get(self, request, token: str, number: int, message_number: int):
        return Response(MessageOutputSerializer(_message_or_404(token, number, message_number)).data)

    @extend_schema(request=MessageBodySerializer, responses={200: MessageOutputSerializer})
    def put(self, request, token: str, number: int, message_number: int):
        return self._update(request, token, number, message_number)

    @extend_schema(request=MessageBodySerializer, responses={200: MessageOutputSerializer})
    def patch(self, request, token: str, number: int, message_number: int):
        return self._update(request, token, number, message_number)

    def _update(self, request, token: str, number: int, message_number: int):
        message = _message_or_404(token, number, message_number)
        # The body is the only editable field, so PUT and PATCH both require it.
        serializer = MessageBodySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = message_update(message=message, body=serializer.validated_data["body"])
        return Response(MessageOutputSerializer(message).data)


class MessageSearchApi(APIView):
    permission_classes = [AllowAny]
    pagination_class = CursorPagination

    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(min_length=1, max_length=255, trim_whitespace=False)

    @extend_schema(
        parameters=[OpenApiParameter("q", str, required=True, description="Substring to find, case-insensitive.")],
        responses={200: MessageOutputSerializer(many=True)},
    )
    def get(self, request, token: str, number: int):
        chat = _chat_or_404(token, number)
        serializer = self.InputSerializer(data={"q": request.query_params.get("q", "")})
        serializer.is_valid(raise_exception=True)
        messages = message_search(chat=chat, query=serializer.validated_data["q"]).select_related("chat")
        return paginate(
            request=request, view=self, queryset=messages, serializer_class=MessageOutputSerializer, ordering=("number",)
        )
