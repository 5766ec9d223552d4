from django.urls import path

from routing.apis import ChatTransferApi, SlaPolicyDetailApi, SlaPolicyListCreateApi, TeamDetailApi, TeamListCreateApi

urlpatterns = [
    path("teams", TeamListCreateApi.as_view(), name="team-list"),
    path("teams/<int:team_id>", TeamDetailApi.as_view(), name="team-detail"),
    path("sla-policies", SlaPolicyListCreateApi.as_view(), name="sla-policy-list"),
    path("sla-policies/<int:policy_id>", SlaPolicyDetailApi.as_view(), name="sla-policy-detail"),
    path("applications/<str:token>/chats/<int:number>/transfer", ChatTransferApi.as_view(), name="chat-transfer"),
]
