from django.urls import path

from agents.apis import AgentDetailApi, AgentListCreateApi, QueueListApi

urlpatterns = [
    path("agents", AgentListCreateApi.as_view(), name="agent-list"),
    path("agents/<int:agent_id>", AgentDetailApi.as_view(), name="agent-detail"),
    path("queue", QueueListApi.as_view(), name="queue"),
]
