"""The export: everything held about one customer, checked against a scripted history (contacts/tests/history.py)."""

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from contacts.tests.history import OTHER, SUBJECT, as_text, history_make
from conversations import creations, inbound
from conversations.models import Chat, Message
from core.models import User
from core.redis import get_redis, tenant_key
from core.tests.support import make_user
from events.models import Event


@pytest.fixture
def admin(tenant_a):
    return make_user(tenant=tenant_a, role=User.Role.ADMIN, email="boss@alpha.test")


def test_the_export_holds_every_record_of_the_customer_and_nothing_of_another(tenant_a, tenant_a_admin_api, drain, admin):
    history = history_make(tenant_a, drain, admin=admin)
    response = tenant_a_admin_api.get(f"/api/contacts/{SUBJECT}/export")
    assert response.status_code == 200
    export = response.json()
    assert set(export) == {"customer_id", "contact", "chats", "events", "redis"}
    assert {key: export["contact"][key] for key in ("customer_id", "name", "email", "chats_count")} == {
        "customer_id": SUBJECT, "name": f"name of {SUBJECT}", "email": f"{SUBJECT}@example.test", "chats_count": 3,
    }  # fmt: skip
    chats = {(chat["application"], chat["number"]): chat for chat in export["chats"]}
    assert set(chats) == {(history.web.token, 1), (history.channel.token, 1), (history.qiscus.token, 1)}
    web_chat = chats[(history.web.token, 1)]
    assert [(m["number"], m["sender"], m["body"], m["private"]) for m in web_chat["messages"]] == [
        (1, "customer", f"hello from {SUBJECT}", False),
        (2, "agent", f"reply to {SUBJECT}", False),
        (3, "agent", f"note on {SUBJECT}", True),  # private notes are data held about the customer too
    ]
    assert web_chat["messages"][2]["attachments"][0]["name"] == f"{SUBJECT}.pdf"
    assert web_chat["messages"][1]["agent_email"] == "boss@alpha.test"
    assert web_chat["ticket"]["title"] == f"ticket of {SUBJECT}"
    assert [m["body"] for m in chats[(history.channel.token, 1)]["messages"]] == [f"channel message of {SUBJECT}"]

    with schema_context(tenant_a.schema_name):
        subject_chats = list(Chat.objects.filter(customer_id=SUBJECT).values_list("id", flat=True))
        # complete: every message and every event of the customer's chats is in it, each with its deliveries
        assert sum(len(chat["messages"]) for chat in export["chats"]) == Message.objects.filter(chat_id__in=subject_chats).count() == 4
        events = Event.objects.filter(chat_id__in=subject_chats)
        assert sorted(event["id"] for event in export["events"]) == sorted(event.webhook_id for event in events)
        assert sorted(event["type"] for event in export["events"]) == sorted(
            ["chat.created"] * 3 + ["message.created"] * 4 + ["ticket.created"]
        )
        assert all(len(event["deliveries"]) == 1 for event in export["events"])
        open_key = inbound.open_chat_key(application_id=history.channel.id, customer_id=SUBJECT)
        answer_key = inbound.delivery_key(application_id=history.channel.id, external_id=f"ext-{SUBJECT}")
        qiscus_key = tenant_key(connection.schema_name, "qiscus", "room", SUBJECT)
        dead = [entry for entry in (get_redis().lrange(creations.dead_key(), 0, -1))]
    assert export["redis"]["open_chats"] == {open_key: 1}
    assert export["redis"]["integration_records"] == {qiscus_key: "1"}
    assert export["redis"]["delivery_answers"] == {answer_key: {"chat_number": 1, "message_number": 1}}
    assert [(r["kind"], r.get("customer_id"), r.get("body")) for r in export["redis"]["queued_creations"]] == [
        ("chat", SUBJECT, None),
        ("message", None, f"queued message of {SUBJECT}"),
    ]
    assert len(dead) == 1 and export["redis"]["dead_creations"][0]["record"]["number"] == 999
    # and nothing of the other customer
    assert OTHER not in as_text(export)


def test_the_export_is_admin_only_and_404_for_an_unknown_customer(tenant_a, tenant_a_admin_api, drain, admin):
    assert tenant_a_admin_api.get("/api/contacts/nobody/export").status_code == 404
