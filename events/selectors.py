import uuid

from django.db.models import QuerySet

from events.models import Delivery, WebhookEndpoint


def webhook_endpoint_list() -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.select_related("application")


def webhook_endpoint_get(*, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.select_related("application").filter(id=endpoint_id).first()


def webhook_delivery_list(*, endpoint: WebhookEndpoint, status: str | None = None) -> QuerySet[Delivery]:
    deliveries = Delivery.objects.filter(endpoint=endpoint).select_related("event")
    return deliveries.filter(status=status) if status else deliveries


def webhook_delivery_get(*, delivery_id: uuid.UUID) -> Delivery | None:
    return Delivery.objects.select_related("event", "endpoint").filter(id=delivery_id).first()
