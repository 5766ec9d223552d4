from django.db import connection
from django.db.models import QuerySet

from conversations.models import Application, Chat, InboundEvent, Message, Ticket
from core.routing import RoutingCache


def inbound_event_list() -> QuerySet[InboundEvent]:
    return InboundEvent.objects.all()


def application_list() -> QuerySet[Application]:
    return Application.objects.all()


def application_get(*, token: str) -> Application | None:
    return Application.objects.filter(token=token).first()


_applications_by_token = RoutingCache("application by schema and token")


def application_ref_get(*, token: str) -> Application | None:
    """The application with this token, with only `id` and `token` loaded, for the hot paths that need no
    more (creating chats and messages, reading a chat's messages). Inside a request it comes from the
    process-local routing cache (core.routing), keyed by schema: an application's id and token never change,
    and its deletion invalidates the cache. Read anything else from `application_get`."""
    return _applications_by_token.get_or_load(
        (connection.schema_name, token), lambda: Application.objects.only("id", "token").filter(token=token).first()
    )


def chat_list(*, application: Application, status: str | None = None) -> QuerySet[Chat]:
    chats = Chat.objects.filter(application=application)
    if status:
        chats = chats.filter(status=status)
    return chats


def chat_get(*, application: Application, number: int) -> Chat | None:
    return Chat.objects.filter(application=application, number=number).first()


def chat_inbox_list(*, status: str | None = None, agent_id: int | None = None) -> QuerySet[Chat]:
    """The staff inbox: chats of every application of the tenant, optionally by status and assigned agent."""
    chats = Chat.objects.select_related("application")
    if status:
        chats = chats.filter(status=status)
    if agent_id is not None:
        chats = chats.filter(assigned_agent_id=agent_id)
    return chats


def chat_open_for_customer_get(*, application: Application, customer_id: str) -> Chat | None:
    """The customer's most recent open (waiting or assigned) chat row in the application, if any."""
    open_statuses = [Chat.Status.WAITING, Chat.Status.ASSIGNED]
    return (
        Chat.objects.filter(application=application, customer_id=customer_id, status__in=open_statuses)
        .order_by("-number")
        .first()
    )


def message_list(*, chat: Chat) -> QuerySet[Message]:
    # Through the chat's related manager: each message's `.chat` is this very instance, so serializing
    # `chat.number` needs neither a join nor one Chat built per row (half the ORM work of a page).
    return chat.messages.all()


def message_get(*, chat: Chat, number: int) -> Message | None:
    return Message.objects.filter(chat=chat, number=number).first()


def message_search(*, chat: Chat, query: str) -> QuerySet[Message]:
    """Messages of this chat whose body contains `query`, ignoring case (ILIKE, served by the trigram index)."""
    return chat.messages.filter(body__trigram_icontains=query)  # `.chat` known, as in message_list


def ticket_list(*, status: str | None = None, priority: str | None = None) -> QuerySet[Ticket]:
    tickets = Ticket.objects.select_related("chat__application")
    if status:
        tickets = tickets.filter(status=status)
    if priority:
        tickets = tickets.filter(priority=priority)
    return tickets


def ticket_get(*, ticket_id: int) -> Ticket | None:
    return Ticket.objects.select_related("chat__application").filter(id=ticket_id).first()
