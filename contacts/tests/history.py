"""A scripted history of two customers in tenant A, for the export and erasure tests: every kind of record the
tenant keeps about a customer, in PostgreSQL and in Redis, each with a body or value that names its owner."""

import json
from dataclasses import dataclass, field

from django.utils import timezone
from django_tenants.utils import schema_context

from contacts.services import contact_update
from contacts.models import Contact
from conversations import creations
from conversations import services as conversation_services
from conversations.models import Application, Chat
from core.models import User
from events.models import Delivery
from events.services import webhook_endpoint_create
from integrations.qiscus.services import qiscus_room_allocate

SUBJECT = "erase-me-7f3a"
OTHER = "keep-me-91c2"


@dataclass
class History:
    web: Application
    channel: Application
    qiscus: Application | None = None
    notes: dict = field(default_factory=dict)


def _deliver(application: Application, customer_id: str, body: str, external_id: str) -> dict:
    return conversation_services.webhook_message_receive(
        application=application, customer_id=customer_id, body=body, external_id=external_id
    )


def history_make(tenant, drain, *, admin: User) -> History:
    """Both customers: a client-API chat with a customer message, an agent reply and a private note, and a
    ticket; a channel chat through the signed webhook (an open-chat record and a stored delivery answer); a
    Qiscus room (its Redis record); a contact edited by staff; events with an endpoint that takes private
    notes (one delivery already sent, the others pending); then, left in Redis: a queued chat, a queued
    message, a dead creation."""
    with schema_context(tenant.schema_name):
        webhook_endpoint_create(url="http://127.0.0.1:9/hook", events=["*"], include_private=True)
        history = History(
            web=conversation_services.application_create(name="Web"),
            channel=conversation_services.application_create(name="WhatsApp"),
        )
        for customer in (SUBJECT, OTHER):
            number = conversation_services.chat_create(application=history.web, customer_id=customer)
            conversation_services.message_create(application=history.web, chat_number=number, body=f"hello from {customer}")
            conversation_services.message_create(
                application=history.web, chat_number=number, body=f"reply to {customer}", sender="agent", author=admin
            )
            conversation_services.message_create(
                application=history.web, chat_number=number, body=f"note on {customer}", sender="agent", author=admin,
                is_private=True, attachments=[{"url": f"https://files.example.test/{customer}.pdf", "mime_type": "application/pdf", "size": 10, "name": f"{customer}.pdf"}],
            )  # fmt: skip
            _deliver(history.channel, customer, f"channel message of {customer}", f"ext-{customer}")
            qiscus_room_allocate(room_id=customer)
        drain(tenant)
        history.qiscus = Application.objects.get(name="Qiscus")
        for customer in (SUBJECT, OTHER):
            chat = Chat.objects.get(application=history.web, customer_id=customer)
            conversation_services.ticket_create(
                chat=chat, title=f"ticket of {customer}", description="refund", priority="high", created_by=admin
            )
            contact_update(contact=Contact.objects.get(customer_id=customer), name=f"name of {customer}", email=f"{customer}@example.test")
        # one delivery was sent already (the subject's first event's); the rest wait
        subject_chats = Chat.objects.filter(customer_id=SUBJECT).values("id")
        Delivery.objects.filter(id=Delivery.objects.filter(chat_id__in=subject_chats).order_by("event_id").values("id")[:1]).update(
            status="succeeded", delivered_at=timezone.now()
        )
        # left in Redis: a queued chat and message of each customer, and a dead creation of the subject
        for customer in (SUBJECT, OTHER):
            conversation_services.chat_create(application=history.web, customer_id=customer)
            conversation_services.message_create(
                application=history.channel, chat_number=Chat.objects.get(application=history.channel, customer_id=customer).number,
                body=f"queued message of {customer}",
            )  # fmt: skip
        creations.dead_push(
            record={"kind": "chat", "app": history.web.id, "number": 999, "customer_id": SUBJECT, "at": timezone.now().isoformat()},
            error="IntegrityError: refused",
        )
    return history


def pending_records(tenant) -> list[dict]:
    with schema_context(tenant.schema_name):
        return creations.pending_peek(100_000)


def as_text(value) -> str:
    return json.dumps(value, default=str)
