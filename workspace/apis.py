"""The agent workspace's API: labels and the chats' labels, canned responses. Thin views (STYLE.md)."""

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.apis import _chat_or_404
from core.openapi import ERROR_RESPONSE
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin, IsTenantStaff
from core.serializers import NameField, StrictSerializer
from workspace.models import COLOR_PATTERN, CannedResponse, Label
from workspace.selectors import canned_response_get, canned_response_list, chat_label_names, label_get, label_list
from workspace.services import (
    canned_response_create,
    canned_response_delete,
    canned_response_update,
    chat_label_add,
    chat_label_remove,
    label_create,
)

# A shortcut is typed after a "/" in an agent's composer: one word of letters, digits, "_", "-" and ".".
SHORTCUT_PATTERN = r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"

# --- labels ---------------------------------------------------------------------------------------------------


class LabelOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    color = serializers.CharField()


class LabelListCreateApi(APIView):
    """Staff read the tenant's labels; admins create them (the tenant's one vocabulary of labels)."""

    pagination_class = CursorPagination

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "LabelInput"

        name = NameField(min_length=1, max_length=64)
        color = serializers.RegexField(
            COLOR_PATTERN, required=False, error_messages={"invalid": "Use a color such as #1f93ff."}
        )

    def get_permissions(self):
        return [IsTenantAdmin()] if self.request.method == "POST" else [IsTenantStaff()]

    @extend_schema(responses={200: LabelOutputSerializer(many=True)})
    def get(self, request):
        return paginate(request=request, view=self, queryset=label_list(), serializer_class=LabelOutputSerializer, ordering=("id",))

    @extend_schema(request=InputSerializer, responses={201: LabelOutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        label = label_create(**serializer.validated_data)
        return Response(LabelOutputSerializer(label).data, status=status.HTTP_201_CREATED)


def _label_or_404(label_id: int) -> Label:
    label = label_get(label_id=label_id)
    if label is None:
        raise Http404("No label with this id.")
    return label


ChatLabelsOutputSerializer = inline_serializer(
    "ChatLabels", fields={"labels": serializers.ListField(child=serializers.CharField())}
)


class ChatLabelApi(APIView):
    """Puts a label on a chat, or takes it off; both idempotent, both answer the chat's labels (sorted). The
    chat's assigned agent or an admin, as for a reply. The chat must be persisted (a 404 for the moments after
    its creation)."""

    permission_classes = [IsTenantStaff]

    @extend_schema(request=None, responses={200: ChatLabelsOutputSerializer, 403: ERROR_RESPONSE})
    def post(self, request, token: str, number: int, label_id: int):
        chat = _chat_or_404(token, number)
        chat_label_add(chat=chat, label=_label_or_404(label_id), user=request.user)
        return Response({"labels": chat_label_names(chat=chat)})

    @extend_schema(request=None, responses={200: ChatLabelsOutputSerializer, 403: ERROR_RESPONSE})
    def delete(self, request, token: str, number: int, label_id: int):
        chat = _chat_or_404(token, number)
        chat_label_remove(chat=chat, label=_label_or_404(label_id), user=request.user)
        return Response({"labels": chat_label_names(chat=chat)})


# --- canned responses -------------------------------------------------------------------------------------------


class CannedResponseOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    shortcut = serializers.CharField()
    body = serializers.CharField()


class CannedResponseInputSerializer(StrictSerializer):
    class Meta:
        ref_name = "CannedResponseInput"

    shortcut = serializers.RegexField(
        SHORTCUT_PATTERN,
        max_length=64,
        error_messages={"invalid": "Use 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit."},
    )
    body = serializers.CharField(
        min_length=1,
        max_length=settings.MESSAGE_MAX_LENGTH,
        trim_whitespace=False,
        help_text="May hold {{customer_id}} and {{agent_name}}, filled when sent; other {{...}} are sent as written.",
    )


class CannedResponseListCreateApi(APIView):
    """Staff read (and search) the canned responses; admins write them."""

    pagination_class = CursorPagination

    class FilterSerializer(serializers.Serializer):
        q = serializers.CharField(min_length=1, max_length=255, required=False, trim_whitespace=False)

    def get_permissions(self):
        return [IsTenantAdmin()] if self.request.method == "POST" else [IsTenantStaff()]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "q",
                {"type": "string", "minLength": 1, "maxLength": 255},
                required=False,
                description="Only responses whose shortcut or body contains this, ignoring case.",
            )
        ],
        responses={200: CannedResponseOutputSerializer(many=True)},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        responses = canned_response_list(query=filters.validated_data.get("q"))
        return paginate(
            request=request, view=self, queryset=responses, serializer_class=CannedResponseOutputSerializer, ordering=("id",)
        )

    @extend_schema(request=CannedResponseInputSerializer, responses={201: CannedResponseOutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request):
        serializer = CannedResponseInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        canned = canned_response_create(**serializer.validated_data)
        return Response(CannedResponseOutputSerializer(canned).data, status=status.HTTP_201_CREATED)


def _canned_response_or_404(canned_response_id: int) -> CannedResponse:
    canned = canned_response_get(canned_response_id=canned_response_id)
    if canned is None:
        raise Http404("No canned response with this id.")
    return canned


class CannedResponseDetailApi(APIView):
    permission_classes = [IsTenantAdmin]

    @extend_schema(request=CannedResponseInputSerializer, responses={200: CannedResponseOutputSerializer, 409: ERROR_RESPONSE})
    def patch(self, request, canned_response_id: int):
        canned = _canned_response_or_404(canned_response_id)
        serializer = CannedResponseInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        canned = canned_response_update(canned=canned, **serializer.validated_data)
        return Response(CannedResponseOutputSerializer(canned).data)

    @extend_schema(responses={204: None})
    def delete(self, request, canned_response_id: int):
        canned_response_delete(canned=_canned_response_or_404(canned_response_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
