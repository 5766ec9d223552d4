from django.conf import settings
from django.core.validators import MaxLengthValidator, RegexValidator
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import ERROR_RESPONSE
from core.outbound_urls import OutboundUrlRefused, outbound_url_check
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin
from core.text import visible_ascii_validator
from scheduler.models import E164_PATTERN, MAX_INTERVAL_SECONDS, OutboundMessage
from scheduler.selectors import outbound_message_get, outbound_message_list, scheduler_state_get
from scheduler.services import (
    outbound_message_create,
    outbound_message_retry,
    scheduler_start,
    scheduler_stop,
    scheduler_update,
)


@extend_schema_serializer(component_name="SchedulerState")
class SchedulerStateOutputSerializer(serializers.Serializer):
    running = serializers.BooleanField()
    interval_seconds = serializers.IntegerField()
    batch_size = serializers.IntegerField()
    webhook_url = serializers.CharField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)


def _state_response(setting=None) -> Response:
    return Response(SchedulerStateOutputSerializer(scheduler_state_get(setting=setting)).data)


class SchedulerApi(APIView):
    """The tenant's outbound scheduler: its state, and its settings (`auth_key` is write-only)."""

    permission_classes = [IsTenantAdmin]

    # Named components: every API's nested "InputSerializer" would otherwise be one "Input" in the schema.
    @extend_schema_serializer(component_name="SchedulerUpdate")
    class InputSerializer(serializers.Serializer):
        interval_seconds = serializers.IntegerField(min_value=1, max_value=MAX_INTERVAL_SECONDS, required=False)
        batch_size = serializers.IntegerField(min_value=1, required=False)
        # Both are sent as they are, in the request line and a header: visible ASCII only (core/text.py).
        webhook_url = serializers.URLField(
            max_length=2000, required=False, allow_blank=True, validators=[visible_ascii_validator]
        )
        auth_key = serializers.CharField(
            max_length=255, required=False, allow_blank=True, trim_whitespace=False, validators=[visible_ascii_validator]
        )

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # For the OpenAPI schema only (made per request, so it follows the setting); enforced below.
            self.fields["batch_size"].max_value = settings.OUTBOUND_BATCH_SIZE_MAX

        def validate_batch_size(self, value: int) -> int:
            if value > settings.OUTBOUND_BATCH_SIZE_MAX:
                maximum = settings.OUTBOUND_BATCH_SIZE_MAX
                raise serializers.ValidationError(f"Ensure this value is less than or equal to {maximum}.")
            return value

        def validate_webhook_url(self, value: str) -> str:
            if value and not value.lower().startswith(("http://", "https://")):
                raise serializers.ValidationError("Use an http:// or https:// URL.")
            if value:
                try:
                    outbound_url_check(url=value)  # SSRF guard; checked again before every request
                except OutboundUrlRefused as error:
                    raise serializers.ValidationError(str(error)) from error
            return value

    @extend_schema(responses={200: SchedulerStateOutputSerializer})
    def get(self, request):
        return _state_response()

    @extend_schema(request=InputSerializer, responses={200: SchedulerStateOutputSerializer})
    def patch(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _state_response(scheduler_update(**serializer.validated_data))


class SchedulerStartApi(APIView):
    """Starts the tenant's job (the first run comes one interval later); starting it again changes nothing."""

    permission_classes = [IsTenantAdmin]

    @extend_schema(request=None, responses={200: SchedulerStateOutputSerializer})
    def post(self, request):
        return _state_response(scheduler_start())


class SchedulerStopApi(APIView):
    """Stops the tenant's job; stopping it again changes nothing. Other tenants are not affected."""

    permission_classes = [IsTenantAdmin]

    @extend_schema(request=None, responses={200: SchedulerStateOutputSerializer})
    def post(self, request):
        return _state_response(scheduler_stop())


@extend_schema_serializer(component_name="OutboundMessage")
class OutboundMessageOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    to = serializers.CharField()
    content = serializers.CharField()
    status = serializers.ChoiceField(choices=OutboundMessage.Status.choices)
    attempts = serializers.IntegerField()
    message_id = serializers.CharField(allow_null=True)
    sent_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    next_attempt_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()


class OutboundMessageListCreateApi(APIView):
    permission_classes = [IsTenantAdmin]
    pagination_class = CursorPagination  # read by the OpenAPI generator; paginate() does the work

    @extend_schema_serializer(component_name="OutboundMessageCreate")
    class InputSerializer(serializers.Serializer):
        to = serializers.RegexField(E164_PATTERN, max_length=16, error_messages={
            "invalid": "Enter a phone number in E.164 format, e.g. +6281234567890."
        })  # fmt: skip
        # Not trimmed: the content is sent as written; but not blank. Its length limit is a setting (below).
        content = serializers.CharField(
            trim_whitespace=False, validators=[RegexValidator(r"\S", message="This field may not be blank.")]
        )

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Read per request (tests change the setting); the validator also puts maxLength in the schema.
            max_length = settings.OUTBOUND_CONTENT_MAX_LENGTH
            self.fields["content"].validators.append(
                MaxLengthValidator(max_length, message=f"Ensure this field has no more than {max_length} characters.")
            )


    @extend_schema_serializer(component_name="OutboundMessageCreated")
    class CreatedOutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        to = serializers.CharField()
        content = serializers.CharField()
        status = serializers.ChoiceField(choices=OutboundMessage.Status.choices)
        created_at = serializers.DateTimeField()

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=OutboundMessage.Status.choices, required=False)

    @extend_schema(
        parameters=[OpenApiParameter("status", enum=OutboundMessage.Status.values, required=False)],
        responses={200: OutboundMessageOutputSerializer(many=True)},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginate(
            request=request,
            view=self,
            queryset=outbound_message_list(**filters.validated_data),
            serializer_class=OutboundMessageOutputSerializer,
            ordering=("created_at", "id"),
        )

    @extend_schema(request=InputSerializer, responses={201: CreatedOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = outbound_message_create(**serializer.validated_data)
        return Response(self.CreatedOutputSerializer(message).data, status=status.HTTP_201_CREATED)


class OutboundMessageDetailApi(APIView):
    permission_classes = [IsTenantAdmin]

    @extend_schema(responses={200: OutboundMessageOutputSerializer})
    def get(self, request, message_id):
        message = outbound_message_get(message_id=message_id)
        if message is None:
            raise Http404("No outbound message with this id.")
        return Response(OutboundMessageOutputSerializer(message).data)


class OutboundMessageRetryApi(APIView):
    """Puts a failed message back in line (fresh attempts). 409 if it is not failed."""

    permission_classes = [IsTenantAdmin]

    @extend_schema(request=None, responses={200: OutboundMessageOutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request, message_id):
        if outbound_message_get(message_id=message_id) is None:
            raise Http404("No outbound message with this id.")
        return Response(OutboundMessageOutputSerializer(outbound_message_retry(message_id=message_id)).data)
