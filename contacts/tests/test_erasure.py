"""Erasure: nothing of the customer is left in any table of the tenant's schema nor anywhere in Redis but the
anonymised audit entry; the other customer's data is untouched; a message racing the erasure is not kept."""

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from audit.models import AuditEntry
from contacts.models import Contact
from contacts.tests.history import OTHER, SUBJECT, as_text, history_make, pending_records
from conversations import services as conversation_services
from conversations.models import Chat, Message, Ticket
from core.models import User
from core.redis import get_redis
from core.tests.support import make_user
from events.models import Delivery, Event

_TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "ARRAY")


@pytest.fixture
def admin(tenant_a):
    return make_user(tenant=tenant_a, role=User.Role.ADMIN, email="boss@alpha.test")


def _schema_hits(tenant, needle: str) -> dict[str, int]:
    """Rows of every table of the tenant's schema holding `needle` in any text, JSON or array column."""
    hits = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns c JOIN information_schema.tables t "
            "USING (table_schema, table_name) WHERE table_schema = %s AND t.table_type = 'BASE TABLE' AND data_type = ANY(%s)",
            [tenant.schema_name, list(_TEXT_TYPES)],
        )
        columns = cursor.fetchall()
        assert len(columns) > 50  # every app's tables, not an empty search path
        for table, column in columns:
            cursor.execute(
                f'SELECT count(*) FROM "{tenant.schema_name}"."{table}" WHERE "{column}"::text LIKE %s', [f"%{needle}%"]
            )
            count = cursor.fetchone()[0]
            if count:
                hits[f"{table}.{column}"] = count
    return hits


def _redis_hits(needle: str) -> list[str]:
    """Every key of the whole Redis whose name or value holds `needle` (strings, lists, sets, sorted sets, hashes)."""
    redis, found = get_redis(), []
    encoded = needle.encode()
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key).decode()
        if kind == "string":
            values = [redis.get(key) or b""]
        elif kind == "list":
            values = redis.lrange(key, 0, -1)
        elif kind == "set":
            values = list(redis.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "hash":
            values = [part for pair in redis.hgetall(key).items() for part in pair]
        else:
            values = []
        if encoded in key or any(encoded in value for value in values):
            found.append(key.decode())
    return found


def _other_customer_state(tenant, history) -> dict:
    with schema_context(tenant.schema_name):
        chats = Chat.objects.filter(customer_id=OTHER)
        return {
            "chats": sorted(chats.values_list("application_id", "number", "messages_count")),
            "messages": sorted(Message.objects.filter(chat__in=chats).values_list("chat_id", "number", "body")),
            "tickets": list(Ticket.objects.filter(chat__in=chats).values_list("title", flat=True)),
            "contact": list(Contact.objects.filter(customer_id=OTHER).values_list("name", "email", "chats_count")),
            "events": sorted((event_id, as_text(data)) for event_id, data in Event.objects.filter(chat_id__in=chats.values("id")).values_list("id", "data")),
            "deliveries": sorted(Delivery.objects.filter(chat_id__in=chats.values("id")).values_list("id", "status")),
            "pending": [record for record in pending_records(tenant) if OTHER in as_text(record)],
        }


def test_erasure_leaves_nothing_of_the_customer_but_the_anonymised_audit_entry(tenant_a, tenant_a_admin_api, drain, admin):
    history = history_make(tenant_a, drain, admin=admin)
    with schema_context(tenant_a.schema_name):
        subject_chat_ids = list(Chat.objects.filter(customer_id=SUBJECT).values_list("id", flat=True))
        totals = (Chat.objects.count(), Message.objects.count(), Ticket.objects.count(), Event.objects.count())
        sent = Delivery.objects.get(status="succeeded").id
    assert _schema_hits(tenant_a, SUBJECT) and _redis_hits(SUBJECT)  # the scan sees them before
    other_before = _other_customer_state(tenant_a, history)

    # when an admin erases the customer
    response = tenant_a_admin_api.delete(f"/api/contacts/{SUBJECT}")
    assert response.status_code == 204, response.content
    # and the queue drains afterwards (its queued chat is persisted without the id; its queued message is gone)
    drain(tenant_a)

    # then no table and no Redis key or value holds the customer id, nor their messages' text
    for needle in (SUBJECT, f"hello from {SUBJECT}", f"note on {SUBJECT}", f"queued message of {SUBJECT}", f"name of {SUBJECT}"):
        assert _schema_hits(tenant_a, needle) == {}, needle
        assert _redis_hits(needle) == [], needle
    with schema_context(tenant_a.schema_name):
        # the chats stay (numbers, report counts), without the customer and without messages; tickets stay
        # without their texts
        assert list(Ticket.objects.filter(chat_id__in=subject_chat_ids).values_list("title", "description")) == [("[erased]", "")]
        assert Chat.objects.filter(id__in=subject_chat_ids, customer_id=None, messages_count=0).count() == 3
        assert Chat.objects.get(application=history.web, number=3).customer_id is None  # the queued one
        assert Message.objects.filter(chat_id__in=subject_chat_ids).count() == 0
        assert (Chat.objects.count(), Message.objects.count(), Ticket.objects.count(), Event.objects.count()) == (
            totals[0] + 2, totals[1] - 4 + 1, totals[2], totals[3] + 2 + 1,  # the queued chats and OTHER's queued message
        )
        # deliveries not yet sent are cancelled; the sent one is history
        subject_deliveries = Delivery.objects.filter(chat_id__in=subject_chat_ids).exclude(id=sent)
        assert set(subject_deliveries.values_list("status", "last_error")) == {("dead", "Cancelled: the customer was erased.")}
        assert Delivery.objects.get(id=sent).status == "succeeded"
        # the audit log: the erasure, and the earlier edit renamed to the same anonymous target
        erased = AuditEntry.objects.get(action="contact.erased")
        assert erased.actor == "admin@alpha.test" or erased.actor.endswith("@example.test")
        assert erased.changes == {
            "chats": 4, "messages": 4, "tickets_scrubbed": 1, "queued_messages": 1, "dead_creations": 1, "events_scrubbed": 8,
            "deliveries_cancelled": 7, "redis_records": 3, "contact": True,
        }  # fmt: skip
        assert list(AuditEntry.objects.filter(target=erased.target).values_list("action", flat=True).order_by("id")) == [
            "contact.updated", "contact.erased"
        ]
    # the other customer: exactly as before (its queued chat and message persisted by the drain, as queued)
    other_after = _other_customer_state(tenant_a, history)
    assert other_after["messages"][: len(other_before["messages"])] == other_before["messages"]
    assert len(other_after["messages"]) == len(other_before["messages"]) + 1
    assert other_after["tickets"] == other_before["tickets"]
    assert other_after["contact"][0][:2] == other_before["contact"][0][:2]
    assert other_after["contact"][0][2] == other_before["contact"][0][2] + 1
    # its events and deliveries unchanged, plus those of its queued chat and message
    assert set(other_before["events"]) < set(other_after["events"]) and len(other_after["events"]) == len(other_before["events"]) + 2
    assert set(other_before["deliveries"]) < set(other_after["deliveries"])
    assert len(other_after["deliveries"]) == len(other_before["deliveries"]) + 2
    # and a second erasure finds nothing to erase
    assert tenant_a_admin_api.delete(f"/api/contacts/{SUBJECT}").status_code == 404


def test_a_customer_message_queued_after_the_erasure_into_an_erased_chat_is_dropped(tenant_a, tenant_a_admin_api, drain, admin):
    # A delivery that found the customer's open chat just before the erasure queues its message just after it.
    history = history_make(tenant_a, drain, admin=admin)
    with schema_context(tenant_a.schema_name):
        erased_chat = Chat.objects.get(application=history.channel, customer_id=SUBJECT)
        events_before = Event.objects.count()
    assert tenant_a_admin_api.delete(f"/api/contacts/{SUBJECT}").status_code == 204
    with schema_context(tenant_a.schema_name):
        conversation_services.message_create(application=history.channel, chat_number=erased_chat.number, body=f"late {SUBJECT}")
        conversation_services.message_create(
            application=history.channel, chat_number=erased_chat.number, body="agent follow-up", sender="agent", author=admin
        )
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        # the customer's message is dropped (no row, no event, not counted); the agent's is kept
        assert list(Message.objects.filter(chat=erased_chat).values_list("body", "sender")) == [("agent follow-up", "agent")]
        assert Chat.objects.get(id=erased_chat.id).messages_count == 1
        new_events = list(Event.objects.filter(id__gt=0).order_by("id").values_list("type", "data"))[events_before:]
        assert [event_type for event_type, _ in new_events if event_type == "message.created"] == ["message.created"] * 2
        assert SUBJECT not in as_text(new_events)
    assert _schema_hits(tenant_a, SUBJECT) == {}
    assert _redis_hits(SUBJECT) == []


def test_a_new_message_after_the_erasure_opens_a_new_chat_and_contact(tenant_a, tenant_a_admin_api, drain, admin):
    history = history_make(tenant_a, drain, admin=admin)
    assert tenant_a_admin_api.delete(f"/api/contacts/{SUBJECT}").status_code == 204
    with schema_context(tenant_a.schema_name):
        answer = conversation_services.webhook_message_receive(application=history.channel, customer_id=SUBJECT, body="I am back")
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        assert answer == {"chat_number": 3, "message_number": 1}  # the channel's chats: 1 erased, 2 the other's
        assert list(Message.objects.filter(chat__customer_id=SUBJECT).values_list("body", flat=True)) == ["I am back"]
        assert Contact.objects.get(customer_id=SUBJECT).chats_count == 1


def test_erasure_of_another_tenants_customer_is_404_and_changes_nothing(tenant_a, tenant_b, tenant_b_admin_api, drain, admin):
    history_make(tenant_a, drain, admin=admin)
    before = _schema_hits(tenant_a, SUBJECT)
    assert tenant_b_admin_api.delete(f"/api/contacts/{SUBJECT}").status_code == 404
    assert _schema_hits(tenant_a, SUBJECT) == before
