from django.urls import path

from agents.apis import (
    AgentDetailApi,
    AgentListCreateApi,
    QiscusAgentAllocationApi,
    QiscusIntegrationApi,
    QiscusMarkAsResolvedApi,
    QueueListApi,
)

urlpatterns = [
    path("agents", AgentListCreateApi.as_view(), name="agent-list"),
    path("agents/<int:agent_id>", AgentDetailApi.as_view(), name="agent-detail"),
    path("queue", QueueListApi.as_view(), name="queue"),
    path("integrations/qiscus", QiscusIntegrationApi.as_view(), name="qiscus-integration"),
    path("integrations/qiscus/agent-allocation", QiscusAgentAllocationApi.as_view(), name="qiscus-agent-allocation"),
    path("integrations/qiscus/mark-as-resolved", QiscusMarkAsResolvedApi.as_view(), name="qiscus-mark-as-resolved"),
]
