from django.urls import path

from agents.apis import ChatAssignApi, ChatResolveApi
from conversations.apis import (
    ApplicationDetailApi,
    ApplicationListCreateApi,
    ChannelWebhookApi,
    ChatDetailApi,
    ChatEscalateApi,
    ChatInboxListApi,
    ChatListCreateApi,
    MessageDetailApi,
    MessageListCreateApi,
    MessageSearchApi,
    TicketDetailApi,
    TicketListApi,
)

app = "applications/<str:token>"

urlpatterns = [
    path("applications", ApplicationListCreateApi.as_view(), name="application-list"),
    path(app, ApplicationDetailApi.as_view(), name="application-detail"),
    path(f"{app}/chats", ChatListCreateApi.as_view(), name="chat-list"),
    path(f"{app}/chats/<int:number>", ChatDetailApi.as_view(), name="chat-detail"),
    path(f"{app}/chats/<int:number>/resolve", ChatResolveApi.as_view(), name="chat-resolve"),
    path(f"{app}/chats/<int:number>/assign", ChatAssignApi.as_view(), name="chat-assign"),
    path(f"{app}/chats/<int:number>/messages", MessageListCreateApi.as_view(), name="message-list"),
    path(f"{app}/chats/<int:number>/messages/search", MessageSearchApi.as_view(), name="message-search"),
    path(f"{app}/chats/<int:number>/messages/<int:message_number>", MessageDetailApi.as_view(), name="message-detail"),
    # Omnichannel inbox: the signed channel webhook, the staff inbox, escalation and tickets.
    path("channels/<str:token>/webhook", ChannelWebhookApi.as_view(), name="channel-webhook"),
    path("chats", ChatInboxListApi.as_view(), name="inbox-chat-list"),
    path(f"{app}/chats/<int:number>/escalate", ChatEscalateApi.as_view(), name="chat-escalate"),
    path("tickets", TicketListApi.as_view(), name="ticket-list"),
    path("tickets/<int:ticket_id>", TicketDetailApi.as_view(), name="ticket-detail"),
]
