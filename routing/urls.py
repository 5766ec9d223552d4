from django.urls import path

from routing.apis import ChatTransferApi, TeamDetailApi, TeamListCreateApi

urlpatterns = [
    path("teams", TeamListCreateApi.as_view(), name="team-list"),
    path("teams/<int:team_id>", TeamDetailApi.as_view(), name="team-detail"),
    path("applications/<str:token>/chats/<int:number>/transfer", ChatTransferApi.as_view(), name="chat-transfer"),
]
