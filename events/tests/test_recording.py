"""The outbox: each change writes its event in its own transaction, with the exact data, and nothing else."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from agents.models import Agent
from agents.services import agent_create, assignment_run, chat_assign, chat_resolve
from core.models import User
from core.tests.support import PASSWORD, api_client, token_for, wait_for
from conversations.lock_objects import chat_lock
from conversations.models import Chat, Message, Ticket
from conversations.services import (
    application_create,
    chat_create,
    creations_persist,
    message_create,
    ticket_create,
    ticket_status_set,
)
from events.models import Delivery, Event, WebhookEndpoint
from events.services import event_record, event_time, webhook_endpoint_create
from scheduler.models import OutboundMessage
from scheduler.services import outbound_send_due, scheduler_start, scheduler_update
from scheduler.services.run import outbound_recover_expired


def _events(*types) -> list[tuple[str, dict]]:
    events = Event.objects.order_by("id")
    if types:
        events = events.filter(type__in=types)
    return [(event.type, event.data) for event in events]


def _chat_data(chat: Chat) -> dict:
    chat.refresh_from_db()
    return {
        "number": chat.number,
        "status": chat.status,
        "customer_id": chat.customer_id,
        "assigned_agent": chat.assigned_agent_id,
        "messages_count": chat.messages_count,
        "created_at": event_time(chat.created_at),
        "assigned_at": event_time(chat.assigned_at),
        "resolved_at": event_time(chat.resolved_at),
        "application": chat.application.token,
        "sla": None,
        "labels": [],
    }


def test_the_drain_records_chat_created_and_message_created_with_the_exact_data(tenant_a, application_a, drained):
    # given a chat with a customer message and an agent reply, persisted by one drain batch
    with schema_context(tenant_a.schema_name):
        agent = agent_create(email="replier@a.test", password=PASSWORD, name="R", role="agent", max_customers=2, is_online=False)
        number = chat_create(application=application_a, customer_id="cust-1")
        message_create(application=application_a, chat_number=number, body="Hello")
        message_create(application=application_a, chat_number=number, body="Hi, how can I help?", sender="agent", author=agent.user)
    drained(tenant_a)

    # then one event per row, in the order they happened, with the contract's data
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
        common = {"application": application_a.token, "chat_number": 1, "customer_id": "cust-1", "private": False, "attachments": []}
        assert _events() == [
            ("chat.created", _chat_data(chat)),
            ("message.created", {**common, "number": 1, "body": "Hello", "sender": "customer", "agent_email": None}),
            ("message.created", {**common, "number": 2, "body": "Hi, how can I help?", "sender": "agent", "agent_email": "replier@a.test"}),
        ]
        event = Event.objects.first()
        assert (event.application_id, event.chat_id, event.is_private) == (application_a.id, chat.id, False)
        assert event.webhook_id.startswith("evt_") and len(event.webhook_id) == 40


def test_a_private_note_with_attachments_is_persisted_as_such_and_reaches_only_endpoints_that_opt_in(
    tenant_a, application_a, drained
):
    # given an endpoint that takes private notes and one that does not
    attachment = {"url": "https://files.example.com/a.pdf", "mime_type": "application/pdf", "size": 10, "name": "a.pdf"}
    with schema_context(tenant_a.schema_name):
        agent = agent_create(email="noter@a.test", password=PASSWORD, name="N", role="agent", max_customers=2, is_online=False)
        opted_in = webhook_endpoint_create(url="http://127.0.0.1:9/in", events=["*"], include_private=True)
        webhook_endpoint_create(url="http://127.0.0.1:9/out", events=["*"])
        number = chat_create(application=application_a, customer_id="cust-1")
        message_create(
            application=application_a, chat_number=number, body="VIP", sender="agent", author=agent.user,
            is_private=True, attachments=[attachment],
        )  # fmt: skip

    # when the drain persists it
    drained(tenant_a)

    # then the row and its event say private, with the attachment, and only the opted-in endpoint gets it
    with schema_context(tenant_a.schema_name):
        message = Message.objects.get()
        assert (message.is_private, message.attachments) == (True, [attachment])
        event = Event.objects.get(type="message.created")
        assert (event.is_private, event.data["private"], event.data["attachments"]) == (True, True, [attachment])
        assert list(Delivery.objects.filter(event=event).values_list("endpoint_id", flat=True)) == [opted_in.id]


def test_a_drain_batch_that_fails_leaves_no_event_and_no_delivery(tenant_a, application_a, drained, monkeypatch):
    # given an endpoint, and a failure after the events' statement, inside the drain's transaction
    import events.services

    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url="http://127.0.0.1:9/x", events=["*"])
        chat_create(application=application_a, customer_id="c")

    def broken(**kwargs):
        raise RuntimeError("the mark failed")

    monkeypatch.setattr(events.services, "tenant_work_mark", broken)

    # when the drain runs, the batch fails
    with pytest.raises(RuntimeError):
        drained(tenant_a)

    # then neither the chat nor its event nor a delivery exists
    with schema_context(tenant_a.schema_name):
        assert (Chat.objects.count(), Event.objects.count(), Delivery.objects.count()) == (0, 0, 0)


def test_an_event_rolls_back_with_its_change(tenant_a, application_a, drained):
    with schema_context(tenant_a.schema_name):
        chat_create(application=application_a, customer_id="c")
    drained(tenant_a)
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
        before = Event.objects.count()
        try:
            with transaction.atomic():
                chat_resolve(chat=chat)
                raise RuntimeError("the caller's transaction fails after the resolve")
        except RuntimeError:
            pass
        chat.refresh_from_db()
        assert (chat.status, Event.objects.count()) == ("waiting", before)


def test_a_drain_batch_written_twice_records_its_events_once(tenant_a, application_a):
    # A drain that died after committing but before trimming its list persists the same records again.
    from conversations.services import _persist_batch

    with schema_context(tenant_a.schema_name):
        records = [
            {"kind": "chat", "app": application_a.id, "number": 1, "customer_id": "c", "at": timezone.now().isoformat()},
            {"kind": "message", "app": application_a.id, "chat": 1, "number": 1, "body": "b", "sender": "customer",
             "author": None, "at": timezone.now().isoformat()},
        ]  # fmt: skip
        _persist_batch(records)
        _persist_batch(records)
        assert [event_type for event_type, _ in _events()] == ["chat.created", "message.created"]


def test_assignment_transfer_and_resolve_record_their_events(tenant_a, application_a, drained):
    with schema_context(tenant_a.schema_name):
        first = agent_create(email="one@a.test", password=PASSWORD, name="One", role="agent", max_customers=2, is_online=True)
        second = agent_create(email="two@a.test", password=PASSWORD, name="Two", role="agent", max_customers=2, is_online=True)
        chat_create(application=application_a, customer_id="c")
    drained(tenant_a)
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
        # when the engine assigns it, an admin transfers it, and it is resolved
        assert assignment_run() == 1
        assigned = _chat_data(chat)
        other = second if chat.assigned_agent_id == first.user_id else first
        chat_assign(chat=chat, agent=other)
        transferred = _chat_data(chat)
        chat_resolve(chat=chat)
        resolved = _chat_data(chat)

        # then each step's event carries the chat as that step left it
        assert _events("chat.assigned", "chat.transferred", "chat.resolved") == [
            ("chat.assigned", assigned),
            ("chat.transferred", transferred),
            ("chat.resolved", resolved),
        ]
        assert (assigned["status"], transferred["assigned_agent"], resolved["status"]) == ("assigned", other.user_id, "resolved")


def test_a_manual_assignment_of_a_waiting_chat_is_chat_assigned(tenant_a, application_a, drained):
    with schema_context(tenant_a.schema_name):
        agent = agent_create(email="m@a.test", password=PASSWORD, name="M", role="agent", max_customers=2, is_online=True)
        Agent.objects.filter(pk=agent.pk).update(is_online=True)
        chat_create(application=application_a, customer_id="c")
    drained(tenant_a)
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
        chat_assign(chat=chat, agent=agent)
        assert _events("chat.assigned", "chat.transferred") == [("chat.assigned", _chat_data(chat))]


def test_tickets_record_created_and_updated(tenant_a, application_a, drained, tenant_a_admin):
    with schema_context(tenant_a.schema_name):
        chat_create(application=application_a, customer_id="c")
    drained(tenant_a)
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
        ticket = ticket_create(chat=chat, title="T", description="D", priority="high", created_by=tenant_a_admin)
        created = {
            "id": ticket.id, "application": application_a.token, "chat_number": 1, "title": "T", "description": "D",
            "status": "open", "priority": "high", "assigned_agent": tenant_a_admin.id,
            "created_at": event_time(ticket.created_at), "updated_at": event_time(ticket.updated_at),
        }  # fmt: skip
        ticket_status_set(ticket=Ticket.objects.get(), status="in_progress")
        ticket.refresh_from_db()
        assert _events("ticket.created", "ticket.updated") == [
            ("ticket.created", created),
            ("ticket.updated", {**created, "status": "in_progress", "updated_at": event_time(ticket.updated_at)}),
        ]
        assert Event.objects.get(type="ticket.updated").chat_id == chat.id


def test_outbound_outcomes_record_sent_and_failed(tenant_a, webhook_receiver):
    from core.tests.fixtures.webhooks import Reply

    with schema_context(tenant_a.schema_name):
        scheduler_update(webhook_url=webhook_receiver.url, auth_key="k", batch_size=2)
        scheduler_start()
        sent = OutboundMessage.objects.create(to="+6281200000001", content="one", next_attempt_at=timezone.now() - timedelta(hours=1))
        failed = OutboundMessage.objects.create(to="+6281200000002", content="two", next_attempt_at=timezone.now() - timedelta(hours=1))
        webhook_receiver.script(Reply(status=202, body={"messageId": "m-1"}), Reply(status=400, body={"error": "bad"}))
        from scheduler.models import SchedulerSetting

        SchedulerSetting.objects.update(schedule_anchor_at=timezone.now() - timedelta(days=1))
        outbound_send_due()
        sent.refresh_from_db()
        failed.refresh_from_db()

        def data(message):
            return {
                "id": str(message.id), "to": message.to, "content": message.content, "status": message.status,
                "attempts": 1, "message_id": message.message_id, "sent_at": event_time(message.sent_at),
                "last_error": message.last_error, "created_at": event_time(message.created_at),
            }  # fmt: skip

        by_type = dict(_events("outbound.sent", "outbound.failed"))
        # Sent in parallel: which one the receiver saw first decides which got the 202.
        assert sorted(by_type) == ["outbound.failed", "outbound.sent"]
        winner, loser = (sent, failed) if sent.status == "sent" else (failed, sent)
        assert by_type == {"outbound.sent": data(winner), "outbound.failed": data(loser)}
        assert (winner.message_id, loser.status) == ("m-1", "failed")


def test_an_outbound_message_given_up_by_recovery_records_outbound_failed(tenant_a, settings):
    with schema_context(tenant_a.schema_name):
        message = OutboundMessage.objects.create(
            to="+6281200000003", content="x", status="sending", attempts=settings.OUTBOUND_MAX_ATTEMPTS,
            claim_token="00000000-0000-0000-0000-000000000001", lease_expires_at=timezone.now() - timedelta(seconds=1),
        )  # fmt: skip
        outbound_recover_expired(now=timezone.now())
        message.refresh_from_db()
        [(event_type, data)] = _events("outbound.failed")
        assert (event_type, data["id"], data["status"], data["last_error"]) == ("outbound.failed", str(message.id), "failed", message.last_error)


def test_deliveries_follow_the_endpoint_filters(tenant_a, application_a, drained):
    with schema_context(tenant_a.schema_name):
        from conversations.services import application_create

        other_application = application_create(name="Other")
        every = webhook_endpoint_create(url="http://127.0.0.1:9/every", events=["*"])
        messages_only = webhook_endpoint_create(url="http://127.0.0.1:9/messages", events=["message.created"])
        application_only = webhook_endpoint_create(url="http://127.0.0.1:9/app", events=["*"], application=other_application)
        inactive = webhook_endpoint_create(url="http://127.0.0.1:9/off", events=["*"])
        WebhookEndpoint.objects.filter(id=inactive.id).update(is_active=False)
        number = chat_create(application=application_a, customer_id="c")
        message_create(application=application_a, chat_number=number, body="Hello")
    drained(tenant_a)
    with schema_context(tenant_a.schema_name):
        deliveries = sorted((d.endpoint_id, d.event.type) for d in Delivery.objects.select_related("event"))
        assert deliveries == sorted([
            (every.id, "chat.created"), (every.id, "message.created"), (messages_only.id, "message.created"),
        ])  # fmt: skip
        assert application_only.deliveries.count() == 0
        assert Message.objects.count() == 1


def _lock_waiters() -> int:
    """Sessions waiting for a lock (the test's database is its own)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0]


def test_a_ticket_update_waits_for_its_chats_lock_so_its_event_follows_the_chats_earlier_one(make_live_tenant):
    # given a committed chat with a ticket, and a change of that chat holding the chat's row lock
    tenant = make_live_tenant("evtticket")
    with schema_context(tenant.schema_name):
        application = application_create(name="Tickets")
        chat_create(application=application, customer_id="c")
        creations_persist(batch_size=10)
        chat = Chat.objects.get()
        admin = User.objects.get(role=User.Role.ADMIN)
        ticket = ticket_create(chat=chat, title="T", description="", priority="low", created_by=admin)
    holding, release = threading.Event(), threading.Event()
    errors = []

    def change_the_chat() -> None:
        try:
            with schema_context(tenant.schema_name), transaction.atomic():
                chat_lock(chat_id=chat.id)
                holding.set()
                release.wait(30)
                event_record(type="chat.sla_breached", data={"first": True}, chat_id=chat.id)
        except BaseException as error:  # reported by the test
            errors.append(error)
        finally:
            connection.close()

    def update_the_ticket() -> None:
        try:
            with schema_context(tenant.schema_name):
                ticket_status_set(ticket=Ticket.objects.get(id=ticket.id), status="closed")
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    holder = threading.Thread(target=change_the_chat)
    holder.start()
    assert holding.wait(30)
    updater = threading.Thread(target=update_the_ticket)
    updater.start()
    try:
        # when the ticket's status is set meanwhile: it waits for the chat's lock (it did not commit)
        wait_for(lambda: not updater.is_alive() or _lock_waiters() > 0, timeout=30, message="the update to finish or wait")
        assert updater.is_alive()
    finally:
        release.set()
        holder.join(30)
        updater.join(30)
    assert errors == []

    # then its event comes after the chat's change's, committed first
    with schema_context(tenant.schema_name):
        assert [event_type for event_type, _ in _events("chat.sla_breached", "ticket.updated")] == [
            "chat.sla_breached", "ticket.updated",
        ]  # fmt: skip
        assert Ticket.objects.get(id=ticket.id).status == "closed"


def test_a_chat_events_data_is_the_staff_inboxs_item_with_its_sla_and_labels(tenant_a, application_a, drained, tenant_a_admin, tenant_a_admin_api):
    # given a chat under an SLA policy, labelled "vip" and "billing"
    from routing.services import sla_policy_create
    from workspace.services import chat_label_add, label_create

    with schema_context(tenant_a.schema_name):
        sla_policy_create(name="Gold", first_response_seconds=600, resolution_seconds=3600, applications=[application_a])
        chat_create(application=application_a, customer_id="cust-sla")
    drained(tenant_a)
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
        for name in ("vip", "billing"):
            chat_label_add(chat=chat, label=label_create(name=name), user=tenant_a_admin)
        agent = agent_create(email="sla-agent@a.test", password=PASSWORD, name="S", role="agent", max_customers=2, is_online=True)

    # when the chat is assigned (its chat.assigned event is written in the assignment's transaction)
    with schema_context(tenant_a.schema_name):
        chat_assign(chat=chat, agent=agent)

    # then the event's data is exactly the /api/chats item at that moment: the SLA's due times and the labels too
    item = tenant_a_admin_api.get("/api/chats").json()["data"][0]
    with schema_context(tenant_a.schema_name):
        data = Event.objects.get(type="chat.assigned").data
    assert data == item
    assert data["sla"]["breached"] is False and data["labels"] == ["billing", "vip"]
