"""Outgoing webhooks' API (tenant admin): endpoints, their secrets, their deliveries, redelivery."""

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.selectors import application_get
from core.openapi import ERROR_RESPONSE
from core.outbound_urls import OutboundUrlRefused, outbound_url_check
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin
from core.text import visible_ascii_validator
from events.models import Delivery
from events.selectors import webhook_delivery_get, webhook_delivery_list, webhook_endpoint_get, webhook_endpoint_list
from events.services import (
    EVENT_TYPES,
    webhook_delivery_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
)


def _url_validate(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise serializers.ValidationError("Use an http:// or https:// URL.")
    try:
        outbound_url_check(url=value)  # the scheduler's SSRF guard; checked again before every request
    except OutboundUrlRefused as error:
        raise serializers.ValidationError(str(error)) from error
    return value


def _events_validate(value: list[str]) -> list[str]:
    # "*" already means every type, whatever else is named; a type named twice is one subscription.
    return ["*"] if "*" in value else list(dict.fromkeys(value))


class _EndpointFields(serializers.Serializer):
    url = serializers.URLField(max_length=2000, validators=[visible_ascii_validator])
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=["*", *EVENT_TYPES]), min_length=1, max_length=len(EVENT_TYPES) + 1
    )
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    include_private = serializers.BooleanField(required=False)

    def validate_url(self, value: str) -> str:
        return _url_validate(value)

    def validate_events(self, value: list[str]) -> list[str]:
        return _events_validate(value)


@extend_schema_serializer(component_name="WebhookEndpoint")
class EndpointOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    application = serializers.CharField(source="application.token", allow_null=True, default=None)
    description = serializers.CharField()
    include_private = serializers.BooleanField()
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="WebhookEndpointCreated")
class EndpointCreatedOutputSerializer(EndpointOutputSerializer):
    secret = serializers.CharField()


@extend_schema_serializer(component_name="WebhookDelivery")
class DeliveryOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    event_id = serializers.CharField(source="event.webhook_id")
    event_type = serializers.CharField(source="event.type")
    status = serializers.ChoiceField(choices=Delivery.Status.choices)
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, delivery):
        data = super().to_representation(delivery)
        if delivery.status in (Delivery.Status.SUCCEEDED, Delivery.Status.DEAD):
            data["next_attempt_at"] = None  # final: no attempt comes
        return data


def _endpoint_or_404(endpoint_id):
    endpoint = webhook_endpoint_get(endpoint_id=endpoint_id)
    if endpoint is None:
        raise Http404("No webhook endpoint with this id.")
    return endpoint


class WebhookEndpointListCreateApi(APIView):
    permission_classes = [IsTenantAdmin]
    pagination_class = CursorPagination

    @extend_schema_serializer(component_name="WebhookEndpointCreate")
    class InputSerializer(_EndpointFields):
        application = serializers.CharField(max_length=64, required=False, allow_null=True)

        def validate_application(self, value):
            if value is None:
                return None
            application = application_get(token=value)
            if application is None:
                raise serializers.ValidationError("No application with this token.")
            return application

    @extend_schema(responses={200: EndpointOutputSerializer(many=True)})
    def get(self, request):
        return paginate(
            request=request, view=self, queryset=webhook_endpoint_list(),
            serializer_class=EndpointOutputSerializer, ordering=("created_at", "id"),
        )  # fmt: skip

    @extend_schema(request=InputSerializer, responses={201: EndpointCreatedOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_create(**serializer.validated_data)
        return Response(EndpointCreatedOutputSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(APIView):
    permission_classes = [IsTenantAdmin]

    @extend_schema_serializer(component_name="WebhookEndpointUpdate")
    class InputSerializer(_EndpointFields):
        is_active = serializers.BooleanField(required=False)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for field in self.fields.values():
                field.required = False

    @extend_schema(responses={200: EndpointOutputSerializer})
    def get(self, request, endpoint_id):
        return Response(EndpointOutputSerializer(_endpoint_or_404(endpoint_id)).data)

    @extend_schema(request=InputSerializer, responses={200: EndpointOutputSerializer})
    def patch(self, request, endpoint_id):
        endpoint = _endpoint_or_404(endpoint_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(EndpointOutputSerializer(webhook_endpoint_update(endpoint=endpoint, **serializer.validated_data)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, endpoint_id):
        webhook_endpoint_delete(endpoint=_endpoint_or_404(endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointRotateSecretApi(APIView):
    """A new secret (shown only here); the old one signs a second signature for 24 h. 409 within a minute of
    the last rotation (a double submit rotates once)."""

    permission_classes = [IsTenantAdmin]

    @extend_schema_serializer(component_name="WebhookSecret")
    class OutputSerializer(serializers.Serializer):
        secret = serializers.CharField()

    @extend_schema(request=None, responses={200: OutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request, endpoint_id):
        endpoint = _endpoint_or_404(endpoint_id)
        return Response({"secret": webhook_endpoint_rotate_secret(endpoint_id=endpoint.id)})


class WebhookDeliveryListApi(APIView):
    permission_classes = [IsTenantAdmin]
    pagination_class = CursorPagination

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Delivery.Status.choices, required=False)

    @extend_schema(
        parameters=[OpenApiParameter("status", enum=Delivery.Status.values, required=False)],
        responses={200: DeliveryOutputSerializer(many=True)},
    )
    def get(self, request, endpoint_id):
        endpoint = _endpoint_or_404(endpoint_id)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginate(
            request=request, view=self, queryset=webhook_delivery_list(endpoint=endpoint, **filters.validated_data),
            serializer_class=DeliveryOutputSerializer, ordering=("created_at", "id"),
        )  # fmt: skip


class WebhookDeliveryRedeliverApi(APIView):
    """Sends the delivery again, with the same `webhook-id` (no change while it is queued or being sent). 409
    while its endpoint is inactive."""

    permission_classes = [IsTenantAdmin]

    @extend_schema(request=None, responses={202: DeliveryOutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request, delivery_id):
        if webhook_delivery_get(delivery_id=delivery_id) is None:
            raise Http404("No webhook delivery with this id.")
        delivery = webhook_delivery_redeliver(delivery_id=delivery_id)
        return Response(DeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
