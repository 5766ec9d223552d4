from django.urls import path

from scheduler.apis import (
    OutboundMessageDetailApi,
    OutboundMessageListCreateApi,
    OutboundMessageRetryApi,
    SchedulerApi,
    SchedulerStartApi,
    SchedulerStopApi,
)

urlpatterns = [
    path("scheduler", SchedulerApi.as_view(), name="scheduler"),
    path("scheduler/start", SchedulerStartApi.as_view(), name="scheduler-start"),
    path("scheduler/stop", SchedulerStopApi.as_view(), name="scheduler-stop"),
    path("outbound-messages", OutboundMessageListCreateApi.as_view(), name="outbound-messages"),
    path("outbound-messages/<uuid:message_id>", OutboundMessageDetailApi.as_view(), name="outbound-message"),
    path("outbound-messages/<uuid:message_id>/retry", OutboundMessageRetryApi.as_view(), name="outbound-message-retry"),
]
