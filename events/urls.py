from django.urls import path

from events.apis import (
    WebhookDeliveryListApi,
    WebhookDeliveryRedeliverApi,
    WebhookEndpointDetailApi,
    WebhookEndpointListCreateApi,
    WebhookEndpointRotateSecretApi,
)

urlpatterns = [
    path("webhook-endpoints", WebhookEndpointListCreateApi.as_view(), name="webhook-endpoints"),
    path("webhook-endpoints/<uuid:endpoint_id>", WebhookEndpointDetailApi.as_view(), name="webhook-endpoint"),
    path("webhook-endpoints/<uuid:endpoint_id>/rotate-secret", WebhookEndpointRotateSecretApi.as_view(), name="webhook-endpoint-rotate-secret"),
    path("webhook-endpoints/<uuid:endpoint_id>/deliveries", WebhookDeliveryListApi.as_view(), name="webhook-endpoint-deliveries"),
    path("webhook-deliveries/<uuid:delivery_id>/redeliver", WebhookDeliveryRedeliverApi.as_view(), name="webhook-delivery-redeliver"),
]
