import datetime
import re
import time

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import ISO_8601, api_settings
from rest_framework.views import APIView

from conversations import inbound
from conversations.access import chat_access_check, message_access_check, ticket_access_check
from conversations.models import Application, Chat, Message, Ticket
from conversations.selectors import (
    application_get,
    application_list,
    application_ref_get,
    chat_get,
    chat_inbox_list,
    chat_list,
    message_get,
    message_list,
    message_search_page,
    ticket_get,
    ticket_list,
)
from conversations.services import (
    application_create,
    application_update,
    chat_create,
    message_create,
    message_update,
    ticket_create,
    ticket_status_set,
    webhook_message_receive,
)
from core.models import User
from core.openapi import ERROR_RESPONSE
from core.pagination import CursorPagination, paginate
from core.parsers import json_decode
from core.permissions import IsTenantAdmin, IsTenantAgent, IsTenantStaff
from core.serializers import NameField
from routing.sla import chat_sla_data
from workspace.attachments import AttachmentSerializer, attachments_data, attachments_field
from workspace.selectors import (
    canned_response_by_shortcut_get,
    canned_response_render,
    chat_label_names,
    chats_label_names_annotate,
    chats_labelled,
)

# --- serializers shared by several endpoints -----------------------------------------------------------------


class ApplicationOutputSerializer(serializers.Serializer):
    token = serializers.CharField()
    name = serializers.CharField()
    chats_count = serializers.IntegerField()
    # The team its chats are routed to (routing app); None: any agent. A new application has none.
    team = serializers.IntegerField(source="team_id", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ChatSlaSerializer(serializers.Serializer):
    """A chat's SLA (routing): its due times in business time, and whether it breached one."""

    first_response_due_at = serializers.DateTimeField(allow_null=True)
    resolution_due_at = serializers.DateTimeField(allow_null=True)
    breached = serializers.BooleanField()


class ChatOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Chat.Status.choices)
    customer_id = serializers.CharField(allow_null=True)
    assigned_agent = serializers.IntegerField(source="assigned_agent_id", allow_null=True)
    messages_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    assigned_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)
    sla = serializers.SerializerMethodField()

    @extend_schema_field(ChatSlaSerializer(allow_null=True))
    def get_sla(self, chat: Chat) -> dict | None:
        data = chat_sla_data(chat)  # routing: None for a chat under no SLA policy
        return None if data is None else ChatSlaSerializer(data).data


class InboxChatOutputSerializer(ChatOutputSerializer):
    application = serializers.CharField(source="application.token")
    # Read from the page's own query (workspace.selectors.chats_label_names_annotate), sorted.
    labels = serializers.ListField(child=serializers.CharField(), source="label_names")


class ChatDetailOutputSerializer(ChatOutputSerializer):
    # Labels are the team's own classification: shown with a staff token, never to the client (absent).
    labels = serializers.ListField(child=serializers.CharField(), required=False, help_text="With a staff token only.")


class TicketOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    application = serializers.CharField(source="chat.application.token")
    chat_number = serializers.IntegerField(source="chat.number")
    title = serializers.CharField()
    description = serializers.CharField()
    status = serializers.ChoiceField(choices=Ticket.Status.choices)
    priority = serializers.ChoiceField(choices=Ticket.Priority.choices)
    assigned_agent = serializers.IntegerField(source="assigned_agent_id", allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class MessageOutputSerializer(serializers.Serializer):
    """A Message, or a page's row of it (selectors.MESSAGE_ROW): the same attributes."""

    chat_number = serializers.IntegerField()
    number = serializers.IntegerField()
    body = serializers.CharField()
    sender = serializers.ChoiceField(choices=Message.Sender.choices)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    # A staff-only note (always false in the client API, which never sees notes) and the references it carries.
    private = serializers.BooleanField(source="is_private")
    attachments = AttachmentSerializer(many=True)

    def to_representation(self, message):
        """What DRF makes of the fields above, built directly: a page serializes up to 200 messages, and DRF's
        walk over the fields (a datetime field alone re-reads the time zone and checks its format per value)
        dominated a list or search request's CPU (bench/README.md, "Figures behind the code").
        tests/test_serializers.py holds it equal to DRF's."""
        created_at, updated_at = message.created_at, message.updated_at
        if api_settings.DATETIME_FORMAT != ISO_8601 or not (_is_aware(created_at) and _is_aware(updated_at)):
            return super().to_representation(message)
        # Read once per serializer: a page's rows all go through this one (its list's child), in one request's
        # time zone, and the lookup (a context-local read) is a measurable part of what a row costs here.
        zone = self.__dict__.get("_zone")
        if zone is None:
            zone = self._zone = timezone.get_current_timezone()
        return {
            "chat_number": int(message.chat_number),
            "number": int(message.number),
            "body": str(message.body),
            "sender": str(message.sender),
            "created_at": _iso_datetime(created_at.astimezone(zone)),
            "updated_at": _iso_datetime(updated_at.astimezone(zone)),
            "private": bool(message.is_private),
            # Stored as validated (workspace.attachments): plain dicts of the four fields, written as they are.
            "attachments": [dict(attachment) for attachment in message.attachments],
        }


def _is_aware(value) -> bool:
    return isinstance(value, datetime.datetime) and value.utcoffset() is not None


def _iso_datetime(value: datetime.datetime) -> str:
    # as serializers.DateTimeField writes ISO 8601: UTC as "Z"
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class ApplicationNameSerializer(serializers.Serializer):
    name = NameField(min_length=1, max_length=255)


class ApplicationUpdateSerializer(ApplicationNameSerializer):
    team = serializers.IntegerField(min_value=1, allow_null=True, required=False, help_text="A team's id (routing), or null")


class MessageBodySerializer(serializers.Serializer):
    required_on_patch = True  # PUT and PATCH both replace the body (core.openapi.AutoSchema)

    body = serializers.CharField(min_length=1, max_length=settings.MESSAGE_MAX_LENGTH, trim_whitespace=False)


_MESSAGE_MAX_LENGTH = MessageBodySerializer._declared_fields["body"].max_length
# What CharField's validators refuse besides length: NUL, and lone surrogates (JSON may escape them in).
_REFUSED_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def _is_plain_text(value, *, max_length: int) -> bool:
    """Whether a CharField with min_length 1 and this max_length takes `value` as it is: a string within the
    limits, without NUL or lone surrogate (its other validators)."""
    return type(value) is str and 0 < len(value) <= max_length and not _REFUSED_CHARACTERS.search(value)


def _message_body(data) -> str:
    """The request's message body, validated as MessageBodySerializer validates it.

    A string within the limits is taken as it is: that is every create the API serves, and building a
    serializer costs a deep copy of its fields per request (bench/README.md has the share). Anything else goes
    through the serializer, so every 400 and its body are the serializer's own.
    """
    body = data.get("body") if type(data) is dict else None
    if _is_plain_text(body, max_length=_MESSAGE_MAX_LENGTH):
        return body
    serializer = MessageBodySerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["body"]


def _chat_customer_id(data) -> str | None:
    """The chat create's customer_id, validated as its InputSerializer validates it (absent or null: None).

    The fast path of `_message_body`, for the same reason: a string within the limits with no whitespace at
    either end (which the field would trim) is taken as it is; anything else goes through the serializer, so
    every 400 and every value it converts (a padded string) are its own.
    """
    input_serializer = ChatListCreateApi.InputSerializer
    if type(data) is dict:
        customer_id = data.get("customer_id")
        if customer_id is None:
            return None
        max_length = input_serializer._declared_fields["customer_id"].max_length
        if _is_plain_text(customer_id, max_length=max_length) and customer_id.strip() == customer_id:
            return customer_id
    serializer = input_serializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data.get("customer_id")


# --- the agent workspace's message input: private notes, canned responses, attachments (issue 25) ----------


class MessageCreateSerializer(serializers.Serializer):
    """What POST .../messages takes. `body` or `canned` (one of the two); `private` and `canned` need a staff
    token; `attachments` anyone."""

    class Meta:
        ref_name = "MessageCreateInput"

    body = serializers.CharField(
        min_length=1, max_length=settings.MESSAGE_MAX_LENGTH, trim_whitespace=False, required=False
    )
    canned = serializers.CharField(
        min_length=1, max_length=64, trim_whitespace=False, required=False,
        help_text="A canned response's shortcut (staff): its body, placeholders filled, is sent instead of `body`.",
    )  # fmt: skip
    private = serializers.BooleanField(
        required=False, default=False, help_text="A private note (staff): never shown to the client API."
    )
    attachments = attachments_field()

    def validate(self, attrs):
        if ("body" in attrs) == ("canned" in attrs):
            raise serializers.ValidationError({"body": ["Send either body or canned (a canned response's shortcut), not both."]})
        return attrs


# The keys that take a message past the plain-body fast path (_message_body).
_MESSAGE_WORKSPACE_FIELDS = frozenset(("canned", "private", "attachments"))


def _message_input(*, data, chat_number: int, application: Application, user: User | None) -> tuple[str, bool, list]:
    """(body, is_private, attachments) of a message create. A plain `{"body"}` takes the fast path; with a note,
    a canned response or attachments, MessageCreateSerializer validates it all, and only staff may send a note
    or a canned response (403: the client's credential, not its input, is what falls short)."""
    if not (type(data) is dict and _MESSAGE_WORKSPACE_FIELDS & data.keys()):
        return _message_body(data), False, []
    serializer = MessageCreateSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    validated = serializer.validated_data
    if user is None and (validated["private"] or "canned" in validated):
        raise PermissionDenied("Private notes and canned responses need a staff token (an agent's or an admin's).")
    body = validated.get("body")
    if "canned" in validated:
        canned = canned_response_by_shortcut_get(shortcut=validated["canned"])
        if canned is None:
            raise serializers.ValidationError({"canned": ["No canned response has this shortcut."]})
        chat = chat_get(application=application, number=chat_number)
        if chat is None:
            # Its placeholders need the chat's row (the customer id): a chat still queued for persistence.
            raise Http404("No chat with this number (yet: a chat just created is persisted within moments).")
        body = canned_response_render(canned=canned, chat=chat, agent=user)
        if len(body) > settings.MESSAGE_MAX_LENGTH:
            raise serializers.ValidationError(
                {"canned": [f"Filled in, the response is longer than {settings.MESSAGE_MAX_LENGTH} characters."]}
            )
    return body, validated["private"], attachments_data(validated.get("attachments") or [])


# --- lookups shared by the views ------------------------------------------------------------------------------


def _application_or_404(token: str) -> Application:
    application = application_get(token=token)
    if application is None:
        raise Http404("No application with this token.")
    return application


def _application_ref_or_404(token: str) -> Application:
    # Only id and token loaded, from the routing cache: for the paths that need no more (see the selector).
    application = application_ref_get(token=token)
    if application is None:
        raise Http404("No application with this token.")
    return application


def _chat_or_404(token: str, number: int) -> Chat:
    chat = chat_get(application=_application_ref_or_404(token), number=number)
    if chat is None:
        raise Http404("No chat with this number.")
    return chat


def _staff_user(request) -> User | None:
    """The tenant staff user behind the request's token; None for the client (no staff token)."""
    user = request.user
    return user if user is not None and getattr(user, "is_tenant_staff", False) else None


def _message_or_404(token: str, chat_number: int, number: int, *, include_private: bool) -> Message:
    # A private note without a staff token: no such message (404), as if it did not exist.
    message = message_get(chat=_chat_or_404(token, chat_number), number=number, include_private=include_private)
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

    @extend_schema(request=ApplicationUpdateSerializer, responses={200: ApplicationOutputSerializer})
    def put(self, request, token: str):
        return self._update(request, token, partial=False)

    @extend_schema(request=ApplicationUpdateSerializer, responses={200: ApplicationOutputSerializer})
    def patch(self, request, token: str):
        return self._update(request, token, partial=True)

    def _update(self, request, token: str, *, partial: bool):
        application = _application_or_404(token)
        serializer = ApplicationUpdateSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        if "team" in serializer.validated_data:
            # Routing (issue 24): the team is looked up first, so an unknown id changes nothing (400). Imported
            # here: routing.apis imports this module.
            from routing.apis import application_team_route

            application_team_route(application=application, team_id=serializer.validated_data["team"])
        if "name" in serializer.validated_data:
            application = application_update(application=application, name=serializer.validated_data["name"])
        return Response(ApplicationOutputSerializer(_application_or_404(token)).data)


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
        application = _application_ref_or_404(token)
        number = chat_create(application=application, customer_id=_chat_customer_id(request.data))
        return Response({"number": number}, status=status.HTTP_202_ACCEPTED)


class ChatDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: ChatDetailOutputSerializer})
    def get(self, request, token: str, number: int):
        chat = _chat_or_404(token, number)
        data = ChatDetailOutputSerializer(chat).data
        if _staff_user(request) is not None:
            data["labels"] = chat_label_names(chat=chat)
        return Response(data)


class MessageListCreateApi(APIView):
    permission_classes = [AllowAny]
    pagination_class = CursorPagination

    @extend_schema(responses={200: MessageOutputSerializer(many=True)})
    def get(self, request, token: str, number: int):
        messages = message_list(chat=_chat_or_404(token, number), include_private=_staff_user(request) is not None)
        return paginate(
            request=request, view=self, queryset=messages, serializer_class=MessageOutputSerializer, ordering=("number",)
        )

    @extend_schema(
        request=MessageCreateSerializer,
        responses={
            202: inline_serializer(
                "MessageAccepted", fields={"chat_number": serializers.IntegerField(), "number": serializers.IntegerField()}
            ),
            # an agent token on a chat that is not the agent's; a private note or canned response without staff token
            403: ERROR_RESPONSE,
        },
    )
    def post(self, request, token: str, number: int):
        application = _application_ref_or_404(token)
        # A tenant user's token makes it an agent's reply; without one it is the customer writing.
        user = _staff_user(request)
        if user is not None and not user.is_tenant_admin:
            # Only the chat's assigned agent (or an admin) replies. That needs the chat's row: while the
            # chat is queued but not persisted, or nobody is assigned, only admins may reply.
            chat_access_check(chat=chat_get(application=application, number=number), user=user, action="reply")
        body, is_private, attachments = _message_input(data=request.data, chat_number=number, application=application, user=user)
        message_number = message_create(
            application=application,
            chat_number=number,
            body=body,
            sender=Message.Sender.AGENT if user is not None else Message.Sender.CUSTOMER,
            author=user,
            is_private=is_private,
            attachments=attachments,
        )
        if message_number is None:
            raise Http404("No chat with this number.")
        return Response({"chat_number": number, "number": message_number}, status=status.HTTP_202_ACCEPTED)


class MessageDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: MessageOutputSerializer})
    def get(self, request, token: str, number: int, message_number: int):
        message = _message_or_404(token, number, message_number, include_private=_staff_user(request) is not None)
        return Response(MessageOutputSerializer(message).data)

    @extend_schema(request=MessageBodySerializer, responses={200: MessageOutputSerializer, 403: ERROR_RESPONSE})
    def put(self, request, token: str, number: int, message_number: int):
        return self._update(request, token, number, message_number)

    @extend_schema(request=MessageBodySerializer, responses={200: MessageOutputSerializer, 403: ERROR_RESPONSE})
    def patch(self, request, token: str, number: int, message_number: int):
        return self._update(request, token, number, message_number)

    def _update(self, request, token: str, number: int, message_number: int):
        user = _staff_user(request)
        message = _message_or_404(token, number, message_number, include_private=user is not None)
        # Only the author's side edits: the client its customers' messages, the author or an admin an agent's.
        message_access_check(message=message, user=user)
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
        parameters=[
            OpenApiParameter(
                "q",
                {"type": "string", "minLength": 1, "maxLength": 255},
                required=True,
                description="Substring to find, case-insensitive.",
            )
        ],
        responses={200: MessageOutputSerializer(many=True)},
        description=(
            "Messages of the chat whose body contains `q`, by number. A page reads a bounded share of the chat: "
            "it may hold fewer than `limit` messages, or none, and still have a `next_cursor`; the results end "
            "when `next_cursor` is null."
        ),
    )
    def get(self, request, token: str, number: int):
        chat = _chat_or_404(token, number)
        serializer = self.InputSerializer(data={"q": request.query_params.get("q", "")})
        serializer.is_valid(raise_exception=True)
        paginator = self.pagination_class()
        limit = paginator.get_page_size(request)
        after = paginator.position_after(request)
        page = message_search_page(
            chat=chat,
            query=serializer.validated_data["q"],
            after=after or 0,
            limit=limit,
            include_private=_staff_user(request) is not None,
        )
        return paginator.position_response(
            data=MessageOutputSerializer(page.messages, many=True).data, next_after=page.next_after
        )


# --- the inbound channel webhook (the HMAC signature is the credential) ----------------------------------


class WebhookSignatureInvalid(exceptions.APIException):
    # Not DRF's AuthenticationFailed: without an authentication class DRF would turn that into a 403.
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = f"Missing or invalid {inbound.SIGNATURE_HEADER} header."
    default_code = "invalid_signature"


class WebhookBodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."
    default_code = "body_too_large"


class ChannelWebhookApi(APIView):
    """A channel provider delivers a customer's message. Signed with the application's webhook secret:
    `X-Sociomile-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, or, with the optional
    `X-Sociomile-Timestamp: <Unix seconds>` (refused beyond 5 minutes either side of now: no replays), of
    `<timestamp>.<raw body>`. JSON only (415 for another Content-Type)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ChannelWebhookInput"  # a name of its own in the OpenAPI schema

        customer_id = serializers.CharField(min_length=1, max_length=255)
        message = serializers.CharField(min_length=1, max_length=settings.MESSAGE_MAX_LENGTH, trim_whitespace=False)
        external_id = serializers.CharField(min_length=1, max_length=255, required=False, allow_null=True)
        attachments = attachments_field()

    @extend_schema(
        request=InputSerializer,
        parameters=[
            OpenApiParameter(
                inbound.SIGNATURE_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description=f"sha256=<hex HMAC-SHA256 of the raw body>, or of `<timestamp>.<raw body>` with {inbound.TIMESTAMP_HEADER}",
            ),
            OpenApiParameter(
                inbound.TIMESTAMP_HEADER,
                {"type": "string", "pattern": "^[0-9]{1,12}$"},
                OpenApiParameter.HEADER,
                required=False,
                description=f"Unix seconds, covered by the signature; refused more than {inbound.TIMESTAMP_TOLERANCE_SECONDS} s from now.",
            ),
        ],
        responses={
            202: inline_serializer(
                "WebhookAccepted",
                fields={"chat_number": serializers.IntegerField(), "message_number": serializers.IntegerField()},
            ),
            401: ERROR_RESPONSE,
            409: ERROR_RESPONSE,
            413: ERROR_RESPONSE,
            415: ERROR_RESPONSE,
            429: ERROR_RESPONSE,
        },
        auth=[],
    )
    def post(self, request, token: str):
        application = _application_or_404(token)
        # The raw bytes, before any parsing: the signature covers them exactly as sent.
        try:
            body = request.body
        except RequestDataTooBig as error:
            raise WebhookBodyTooLarge() from error
        refusal = inbound.signature_refusal(
            secret=application.webhook_secret,
            body=body,
            header=request.headers.get(inbound.SIGNATURE_HEADER),
            timestamp=request.headers.get(inbound.TIMESTAMP_HEADER),
            now=time.time(),
        )
        if refusal is not None:
            raise WebhookSignatureInvalid(refusal)
        # The body is read raw (for the signature), past DRF's parser selection: the media type is checked here.
        media_type = request.content_type.partition(";")[0].strip().lower()  # DRF's: the whole header
        if media_type != "application/json":
            raise exceptions.UnsupportedMediaType(media_type or "(none)")
        # Counted after the signature check: unsigned noise cannot use up the application's allowance.
        retry_after = inbound.rate_limit_hit(
            application_id=application.id,
            limit=settings.WEBHOOK_RATE_LIMIT,
            window_seconds=settings.WEBHOOK_RATE_WINDOW_SECONDS,
        )
        if retry_after is not None:
            raise exceptions.Throttled(wait=retry_after)  # DRF answers 429 with Retry-After
        serializer = self.InputSerializer(data=json_decode(body))
        serializer.is_valid(raise_exception=True)
        answer = webhook_message_receive(
            application=application,
            customer_id=serializer.validated_data["customer_id"],
            body=serializer.validated_data["message"],
            external_id=serializer.validated_data.get("external_id"),
            attachments=attachments_data(serializer.validated_data.get("attachments") or []),
        )
        return Response(answer, status=status.HTTP_202_ACCEPTED)


# --- staff: the inbox, escalation, tickets ------------------------------------------------------------------


class ChatInboxListApi(APIView):
    """Every chat of the tenant, newest first (as Chatwoot's and Intercom's inboxes open)."""

    permission_classes = [IsTenantStaff]
    pagination_class = CursorPagination

    class FilterSerializer(serializers.Serializer):
        # Not blank: `?agent=` is no agent id, and the schema (an enum, a pattern) does not allow it either.
        status = serializers.ChoiceField(choices=Chat.Status.values, required=False)
        agent = serializers.RegexField(
            r"^(me|[1-9][0-9]{0,17})$",
            required=False,
            error_messages={"invalid": 'Must be an agent id or "me".'},
        )
        sla = serializers.ChoiceField(choices=["breached", "due_soon"], required=False)  # routing
        label = serializers.CharField(min_length=1, max_length=64, required=False)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", enum=Chat.Status.values, required=False),
            OpenApiParameter(
                "agent", str, required=False, pattern=r"^(me|[1-9][0-9]{0,17})$", description='The assigned agent\'s user id, or "me".'
            ),
            OpenApiParameter(
                "sla", enum=["breached", "due_soon"], required=False,
                description="breached: the chat's SLA breached; due_soon: not breached, a due time still unmet within SLA_DUE_SOON_SECONDS",
            ),
            OpenApiParameter(
                "label",
                {"type": "string", "minLength": 1, "maxLength": 64},
                required=False,
                description="Only chats carrying the label of this name (any case).",
            ),
        ],
        responses={200: InboxChatOutputSerializer(many=True)},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        agent = filters.validated_data.get("agent")
        agent_id = None if not agent else request.user.id if agent == "me" else int(agent)
        chats = chat_inbox_list(
            status=filters.validated_data.get("status") or None, agent_id=agent_id, sla=filters.validated_data.get("sla")
        )
        if filters.validated_data.get("label"):
            chats = chats_labelled(chats=chats, name=filters.validated_data["label"])
        chats = chats_label_names_annotate(chats=chats)
        return paginate(
            request=request, view=self, queryset=chats, serializer_class=InboxChatOutputSerializer, ordering=("-created_at",)
        )


class ChatEscalateApi(APIView):
    """An agent escalates a chat to a ticket, which the agent then owns. Agents only, as the contract says:
    admins supervise tickets (they change their status) rather than open them."""

    permission_classes = [IsTenantAgent]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ChatEscalateInput"  # a name of its own in the OpenAPI schema

        title = NameField(min_length=1, max_length=255)
        description = serializers.CharField(max_length=settings.MESSAGE_MAX_LENGTH, required=False, allow_blank=True, default="")
        priority = serializers.ChoiceField(choices=Ticket.Priority.values, required=False, default=Ticket.Priority.MEDIUM)

    @extend_schema(request=InputSerializer, responses={201: TicketOutputSerializer, 403: ERROR_RESPONSE, 409: ERROR_RESPONSE})
    def post(self, request, token: str, number: int):
        # The ticket points at the chat's row: a chat still queued for persistence is a 404 for a moment.
        chat = _chat_or_404(token, number)
        chat_access_check(chat=chat, user=request.user, action="escalate it")  # again in ticket_create, locked
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ticket = ticket_create(chat=chat, created_by=request.user, **serializer.validated_data)
        return Response(TicketOutputSerializer(ticket).data, status=status.HTTP_201_CREATED)


def _ticket_or_404(ticket_id: int) -> Ticket:
    ticket = ticket_get(ticket_id=ticket_id)
    if ticket is None:
        raise Http404("No ticket with this id.")
    return ticket


class TicketListApi(APIView):
    """The tenant's tickets, newest first."""

    permission_classes = [IsTenantStaff]
    pagination_class = CursorPagination

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Ticket.Status.values, required=False)
        priority = serializers.ChoiceField(choices=Ticket.Priority.values, required=False)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", enum=Ticket.Status.values, required=False),
            OpenApiParameter("priority", enum=Ticket.Priority.values, required=False),
        ],
        responses={200: TicketOutputSerializer(many=True)},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        tickets = ticket_list(
            status=filters.validated_data.get("status") or None, priority=filters.validated_data.get("priority") or None
        )
        return paginate(
            request=request, view=self, queryset=tickets, serializer_class=TicketOutputSerializer, ordering=("-created_at",)
        )


class TicketDetailApi(APIView):
    """Staff read a ticket; only admins change its status."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TicketStatusInput"  # a name of its own in the OpenAPI schema

        required_on_patch = True  # the status is the PATCH's only field (core.openapi.AutoSchema)
        status = serializers.ChoiceField(choices=Ticket.Status.values)

    def get_permissions(self):
        return [IsTenantStaff()] if self.request.method == "GET" else [IsTenantAdmin()]

    @extend_schema(responses={200: TicketOutputSerializer})
    def get(self, request, ticket_id: int):
        return Response(TicketOutputSerializer(_ticket_or_404(ticket_id)).data)

    @extend_schema(request=InputSerializer, responses={200: TicketOutputSerializer})
    def patch(self, request, ticket_id: int):
        ticket = _ticket_or_404(ticket_id)
        ticket_access_check(ticket=ticket, user=request.user)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ticket = ticket_status_set(ticket=ticket, status=serializer.validated_data["status"])
        return Response(TicketOutputSerializer(ticket).data)
