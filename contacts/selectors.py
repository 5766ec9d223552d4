"""Reading contacts: the list and search, one contact, and everything held about a customer (the export)."""

import json

from django.db.models import Q, QuerySet

from contacts.hooks import customer_keys
from contacts.models import Contact
from conversations import creations, inbound
from conversations.models import Application, Chat, Message, Ticket
from core.redis import get_redis
from events.models import Delivery, Event
from events.envelope import event_time

# A customer id longer than this is no customer id (Chat.customer_id's length): not looked up at all.
CUSTOMER_ID_MAX_LENGTH = Contact._meta.get_field("customer_id").max_length


def contact_list(*, q: str | None = None) -> QuerySet:
    """Contacts, most recently seen first; `q` matches part of the customer id, name, email or phone,
    case-insensitively (each served by its trigram index)."""
    contacts = Contact.objects.all()
    if q:
        contacts = contacts.filter(
            Q(customer_id__trigram_icontains=q) | Q(name__trigram_icontains=q)
            | Q(email__trigram_icontains=q) | Q(phone__trigram_icontains=q)
        )  # fmt: skip
    return contacts


def contact_get(*, customer_id: str) -> Contact | None:
    if len(customer_id) > CUSTOMER_ID_MAX_LENGTH:
        return None
    return Contact.objects.filter(customer_id=customer_id).first()


# --- what Redis holds about a customer ---------------------------------------------------------------------


def _chat_label(application_id: int, number: int) -> str:
    return f"{application_id}:{number}"


def customer_redis_records(*, customer_id: str, chats: list[tuple[int, int]]) -> dict:
    """What the tenant's Redis holds about a customer whose persisted chats are `chats` ((application id,
    number) pairs): their open-chat records, integration records, queued and dead creations (their chats, and
    the messages of those chats) and the stored answers of channel deliveries into their chats. Keys are
    returned too, for the erasure. Reads every queued creation and scans the delivery answers of the
    applications involved: an admin's occasional request, not a hot path."""
    redis = get_redis()
    theirs = {_chat_label(app, number) for app, number in chats}

    def record_is_theirs(record: dict) -> bool:
        if record.get("kind") == "chat":
            return record.get("customer_id") == customer_id
        return record.get("kind") == "message" and _chat_label(record.get("app"), record.get("chat")) in theirs

    queued = [json.loads(raw) for raw in redis.lrange(creations.pending_key(), 0, -1)]
    for record in queued:  # a chat is queued before its messages: its messages are found in the same pass
        if record.get("kind") == "chat" and record.get("customer_id") == customer_id:
            theirs.add(_chat_label(record["app"], record["number"]))
    dead = [json.loads(raw) for raw in redis.lrange(creations.dead_key(), 0, -1)]

    application_ids = sorted({int(label.split(":")[0]) for label in theirs} | set(Application.objects.values_list("id", flat=True)))
    open_chats = {}
    for application_id in application_ids:
        key = inbound.open_chat_key(application_id=application_id, customer_id=customer_id)
        value = redis.get(key)
        if value is not None:
            open_chats[key] = int(value)
    integration_records = {}
    for key in customer_keys(customer_id):
        value = redis.get(key)
        if value is not None:
            integration_records[key] = value.decode()
    delivery_answers = {}
    for application_id in sorted({int(label.split(":")[0]) for label in theirs}):
        pattern = inbound.delivery_key(application_id=application_id, external_id="*")
        for key in redis.scan_iter(pattern, count=1000):
            answer = inbound.delivery_answer(key=key.decode())
            if answer is not None and _chat_label(application_id, answer.get("chat_number")) in theirs:
                delivery_answers[key.decode()] = answer
    return {
        "open_chats": open_chats,
        "integration_records": integration_records,
        "queued_creations": [record for record in queued if record_is_theirs(record)],
        "dead_creations": [entry for entry in dead if record_is_theirs(entry.get("record") or {})],
        "delivery_answers": delivery_answers,
        "chats": sorted(theirs),
    }


# --- the export ---------------------------------------------------------------------------------------------


def _message_data(message: Message) -> dict:
    return {
        "number": message.number,
        "body": message.body,
        "sender": message.sender,
        "private": message.is_private,
        "attachments": message.attachments,
        "agent_email": message.author.email if message.author_id is not None else None,
        "created_at": event_time(message.created_at),
        "updated_at": event_time(message.updated_at),
    }


def _ticket_data(ticket: Ticket) -> dict:
    return {
        "id": ticket.id,
        "title": ticket.title,
        "description": ticket.description,
        "status": ticket.status,
        "priority": ticket.priority,
        "assigned_agent": ticket.assigned_agent_id,
        "created_at": event_time(ticket.created_at),
        "updated_at": event_time(ticket.updated_at),
    }


def contact_export(*, customer_id: str, contact: Contact | None) -> dict:
    """Everything the tenant holds about the customer, as JSON: the contact; each chat with all its messages
    (private notes included: they are data held about the customer) and its ticket; the events of those chats
    with their deliveries; and the Redis records (customer_redis_records)."""
    chats = list(
        Chat.objects.filter(customer_id=customer_id).select_related("application").order_by("created_at", "id")
    )
    chat_ids = [chat.id for chat in chats]
    messages: dict[int, list] = {chat_id: [] for chat_id in chat_ids}
    for message in Message.objects.filter(chat_id__in=chat_ids).select_related("author").order_by("chat_id", "number"):
        messages[message.chat_id].append(_message_data(message))
    tickets = {ticket.chat_id: _ticket_data(ticket) for ticket in Ticket.objects.filter(chat_id__in=chat_ids)}
    deliveries: dict[int, list] = {}
    for delivery in Delivery.objects.filter(event__chat_id__in=chat_ids).order_by("created_at", "id"):
        deliveries.setdefault(delivery.event_id, []).append({
            "id": str(delivery.id), "endpoint": str(delivery.endpoint_id), "status": delivery.status,
            "attempts": delivery.attempts, "last_status_code": delivery.last_status_code,
            "last_error": delivery.last_error, "created_at": event_time(delivery.created_at),
            "delivered_at": event_time(delivery.delivered_at),
        })  # fmt: skip
    events = [
        {"id": event.webhook_id, "type": event.type, "created_at": event_time(event.created_at), "data": event.data,
         "deliveries": deliveries.get(event.id, [])}
        for event in Event.objects.filter(chat_id__in=chat_ids).order_by("id")
    ]  # fmt: skip
    redis_records = customer_redis_records(
        customer_id=customer_id, chats=[(chat.application_id, chat.number) for chat in chats]
    )
    return {
        "customer_id": customer_id,
        "contact": contact_data(contact) if contact is not None else None,
        "chats": [
            {
                "application": chat.application.token,
                "number": chat.number,
                "status": chat.status,
                "customer_id": chat.customer_id,
                "assigned_agent": chat.assigned_agent_id,
                "messages_count": chat.messages_count,
                "created_at": event_time(chat.created_at),
                "assigned_at": event_time(chat.assigned_at),
                "resolved_at": event_time(chat.resolved_at),
                "messages": messages[chat.id],
                "ticket": tickets.get(chat.id),
            }
            for chat in chats
        ],
        "events": events,
        "redis": {name: value for name, value in redis_records.items() if name != "chats"},
    }


def contact_data(contact: Contact) -> dict:
    """The contact as the API shows it."""
    return {
        "customer_id": contact.customer_id,
        "name": contact.name,
        "email": contact.email,
        "phone": contact.phone,
        "attributes": contact.attributes,
        "chats_count": contact.chats_count,
        "first_seen_at": event_time(contact.first_seen_at),
        "last_seen_at": event_time(contact.last_seen_at),
    }
