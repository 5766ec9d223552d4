from django.urls import path

from integrations.qiscus.apis import QiscusAgentAllocationApi, QiscusIntegrationApi, QiscusMarkAsResolvedApi

urlpatterns = [
    path("integrations/qiscus", QiscusIntegrationApi.as_view(), name="qiscus-integration"),
    path("integrations/qiscus/agent-allocation", QiscusAgentAllocationApi.as_view(), name="qiscus-agent-allocation"),
    path("integrations/qiscus/mark-as-resolved", QiscusMarkAsResolvedApi.as_view(), name="qiscus-mark-as-resolved"),
]
