from django.urls import path

from workspace.apis import CannedResponseDetailApi, CannedResponseListCreateApi, ChatLabelApi, LabelListCreateApi

urlpatterns = [
    path("labels", LabelListCreateApi.as_view(), name="label-list"),
    path("applications/<str:token>/chats/<int:number>/labels/<int:label_id>", ChatLabelApi.as_view(), name="chat-label"),
    path("canned-responses", CannedResponseListCreateApi.as_view(), name="canned-response-list"),
    path("canned-responses/<int:canned_response_id>", CannedResponseDetailApi.as_view(), name="canned-response-detail"),
]
