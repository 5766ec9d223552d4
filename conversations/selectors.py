from django.db.models import QuerySet

from conversations.models import Application, Chat, InboundEvent, Message


def inbound_event_list() -> QuerySet[InboundEvent]:
    return InboundEvent.objects.all()


def application_list() -> QuerySet[Application]:
    return Application.objects.all()


def application_get(*, token: str) -> Application | None:
    return Application.objects.filter(token=token).first()


def chat_list(*, application: Application, status: str | None = None) -> QuerySet[Chat]:
    chats = Chat.objects.filter(application=application)
    if status:
        chats = chats.filter(status=status)
    return chats


def chat_get(*, application: Application, number: int) -> Chat | None:
    return Chat.objects.filter(application=application, number=number).first()


def message_list(*, chat: Chat) -> QuerySet[Message]:
    return Message.objects.filter(chat=chat)


def message_get(*, chat: Chat, number: int) -> Message | None:
    return Message.objects.filter(chat=chat, number=number).first()


def message_search(*, chat: Chat, query: str) -> QuerySet[Message]:
    """Messages of this chat whose body contains `query`, ignoring case (ILIKE, served by the trigram index)."""
    return Message.objects.filter(chat=chat, body__icontains=query)
