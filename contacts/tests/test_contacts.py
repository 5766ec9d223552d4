"""Contacts: made and kept current by the drain on every path a customer arrives by; search, read, edit."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

from contacts.models import Contact
from conversations import creations
from conversations import services as conversation_services
from conversations.tests.factories import webhook_deliver
from core.models import User
from core.tests.support import api_client, make_user, plans_of, token_for
from integrations.qiscus.services import qiscus_room_allocate


@pytest.fixture
def agent_api(tenant_a):
    return api_client(tenant=tenant_a, token=token_for(make_user(tenant=tenant_a, role=User.Role.AGENT), tenant=tenant_a))


def _contacts(tenant) -> list[tuple]:
    with schema_context(tenant.schema_name):
        return list(Contact.objects.order_by("customer_id").values_list("customer_id", "chats_count"))


def test_a_contact_is_made_on_first_contact_by_the_client_api_the_channel_webhook_and_qiscus(tenant_a, application_a, drain):
    client = api_client(tenant=tenant_a)
    # given a chat by the client API, one by the channel webhook, one by Qiscus, and an anonymous chat
    assert client.post(f"/api/applications/{application_a.token}/chats", {"customer_id": "api-1"}).status_code == 202
    assert client.post(f"/api/applications/{application_a.token}/chats", {}).status_code == 202
    assert webhook_deliver(client, application_a, {"customer_id": "wa:+62811", "message": "Hi"}).status_code == 202
    with schema_context(tenant_a.schema_name):
        qiscus_room_allocate(room_id="room-77")
    # then no contact exists before the drain persists the chats
    assert _contacts(tenant_a) == []
    # when the drain runs
    drain(tenant_a)
    # then each customer has exactly one contact, seen once
    assert _contacts(tenant_a) == [("api-1", 1), ("room-77", 1), ("wa:+62811", 1)]


def test_counts_and_times_follow_the_chats_and_the_customers_messages(tenant_a, application_a, drain):
    with schema_context(tenant_a.schema_name):
        first = conversation_services.chat_create(application=application_a, customer_id="c-1")
        drain(tenant_a)
        contact = Contact.objects.get(customer_id="c-1")
        assert (contact.chats_count, contact.first_seen_at) == (1, contact.last_seen_at)
        conversation_services.chat_create(application=application_a, customer_id="c-1")
        conversation_services.message_create(application=application_a, chat_number=first, body="again")
        drain(tenant_a)
        contact.refresh_from_db()
        assert contact.chats_count == 2
        assert contact.last_seen_at > contact.first_seen_at


def test_a_batch_persisted_twice_counts_its_chats_once(tenant_a, application_a, drain):
    # A drain that died after committing and before trimming the list runs the same records again.
    with schema_context(tenant_a.schema_name):
        conversation_services.chat_create(application=application_a, customer_id="twice")
        records = creations.pending_peek(100)
        conversation_services._persist_batch(records)
        conversation_services._persist_batch(records)
        assert Contact.objects.get(customer_id="twice").chats_count == 1


def test_staff_search_by_part_of_the_id_name_email_or_phone(tenant_a, application_a, drain, agent_api):
    with schema_context(tenant_a.schema_name):
        for customer_id in ("wa:+6281111", "web-abc", "web-xyz"):
            conversation_services.chat_create(application=application_a, customer_id=customer_id)
        drain(tenant_a)
        Contact.objects.filter(customer_id="web-abc").update(name="Siti Rahma", email="siti@example.test")
        Contact.objects.filter(customer_id="web-xyz").update(phone="+62 812 9999")

    def found(q: str) -> list[str]:
        response = agent_api.get("/api/contacts", {"q": q})
        assert response.status_code == 200, response.content
        return sorted(item["customer_id"] for item in response.json()["data"])

    assert found("6281111") == ["wa:+6281111"]
    assert found("RAHMA") == ["web-abc"]
    assert found("siti@") == ["web-abc"]
    assert found("812 99") == ["web-xyz"]
    assert found("web-") == ["web-abc", "web-xyz"]
    assert found("%") == []  # a LIKE wildcard is a character like any other
    assert found("") == ["wa:+6281111", "web-abc", "web-xyz"]


def test_get_and_patch_a_contact(tenant_a, application_a, drain, agent_api):
    with schema_context(tenant_a.schema_name):
        conversation_services.chat_create(application=application_a, customer_id="ext/42 ü")
        drain(tenant_a)
    path = "/api/contacts/ext/42%20%C3%BC"
    response = agent_api.patch(
        path, {"name": "Budi", "email": "Budi@Example.test", "phone": "+62 811-222", "attributes": {"tier": "gold", "vip": True}}
    )
    assert response.status_code == 200, response.content
    body = agent_api.get(path).json()
    assert {key: body[key] for key in ("customer_id", "name", "email", "phone", "attributes", "chats_count")} == {
        "customer_id": "ext/42 ü", "name": "Budi", "email": "Budi@Example.test", "phone": "+62 811-222",
        "attributes": {"tier": "gold", "vip": True}, "chats_count": 1,
    }  # fmt: skip
    assert set(body) == {"customer_id", "name", "email", "phone", "attributes", "chats_count", "first_seen_at", "last_seen_at"}


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "not-an-email"}, "email"),
        ({"phone": "call me"}, "phone"),
        ({"name": "a\nb"}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"attributes": ["a"]}, "attributes"),
        ({"attributes": {"nested": {"a": 1}}}, "attributes"),
        ({"attributes": {f"k{i}": i for i in range(51)}}, "attributes"),
        ({"attributes": {"k": "x" * 1001}}, "attributes"),
        ({"customer_id": "other"}, "customer_id"),
        ({"chats_count": 9}, "chats_count"),
    ],
)
def test_a_bad_patch_is_400_naming_the_field_and_changes_nothing(tenant_a, application_a, drain, agent_api, payload, field):
    with schema_context(tenant_a.schema_name):
        conversation_services.chat_create(application=application_a, customer_id="p-1")
        drain(tenant_a)
        before = Contact.objects.values().get(customer_id="p-1")
    response = agent_api.patch("/api/contacts/p-1", payload)
    assert response.status_code == 400
    assert field in response.json()
    with schema_context(tenant_a.schema_name):
        assert Contact.objects.values().get(customer_id="p-1") == before


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/contacts/unknown", 404),
        ("/api/contacts/" + "x" * 5000, 404),
        ("/api/contacts/%FF%FE", 404),
        ("/api/contacts/%00", 400),
        ("/api/contacts/a%00b/export", 400),
        ("/api/contacts/%F0%9F%98%80", 404),
        ("/api/contacts/..%2F..%2Fadmin", 404),
        ("/api/contacts/' OR 1=1 --", 404),
    ],
)
def test_any_bytes_in_the_customer_id_are_a_json_4xx(tenant_a, tenant_a_admin_api, path, status):
    for method in ("get", "patch", "delete"):
        response = getattr(tenant_a_admin_api, method)(path)
        assert response.status_code == status, (method, path, response.content)
        assert response["Content-Type"].startswith("application/json")
    assert tenant_a_admin_api.get(path.rstrip("/") + "/export" if not path.endswith("/export") else path).status_code == status


def test_the_access_matrix(tenant_a, tenant_b, application_a, drain, agent_api, tenant_a_admin_api, tenant_b_admin_api):
    with schema_context(tenant_a.schema_name):
        conversation_services.chat_create(application=application_a, customer_id="m-1")
        drain(tenant_a)
    anonymous = api_client(tenant=tenant_a)
    # another tenant's admin token means nothing on this host; nor does this tenant's contact on the other host
    other_host = api_client(tenant=tenant_b, token=tenant_b_admin_api._credentials["HTTP_AUTHORIZATION"].split()[1])
    cases = [
        ("get", "/api/contacts", {}, {"anonymous": 401, "agent": 200, "admin": 200}),
        ("get", "/api/contacts/m-1", {}, {"anonymous": 401, "agent": 200, "admin": 200}),
        ("patch", "/api/contacts/m-1", {"name": "N"}, {"anonymous": 401, "agent": 200, "admin": 200}),
        ("get", "/api/contacts/m-1/export", {}, {"anonymous": 401, "agent": 403, "admin": 200}),
        ("delete", "/api/contacts/m-1", {}, {"anonymous": 401, "agent": 403, "admin": 204}),
    ]
    for method, path, body, expected in cases:
        for who, client in (("anonymous", anonymous), ("agent", agent_api), ("admin", tenant_a_admin_api)):
            response = getattr(client, method)(path, body) if body else getattr(client, method)(path)
            assert response.status_code == expected[who], (who, method, path, response.content)
        # tenant B's admin: its token is unknown on A's host, and A's contact unknown on B's host
        foreign = api_client(tenant=tenant_a, token=other_host._credentials["HTTP_AUTHORIZATION"].split()[1])
        assert getattr(foreign, method)(path).status_code == 401
        if path != "/api/contacts":
            assert getattr(other_host, method)(path).status_code == 404
    assert other_host.get("/api/contacts").json()["data"] == []


def test_a_batch_of_customer_messages_finds_its_contacts_by_the_unique_index_before_any_analyze(tenant_a, application_a):
    """A tenant's contacts that arrived since its last ANALYZE look like none to the planner. The drain's hook
    then looked each customer's contact up through the pg_trgm index on customer_id (pg_trgm answers `=` too):
    a bitmap scan of every trigram's posting list, and customer ids that share a prefix share trigrams. Under
    the fault tests' load one batch of 1,000 took 12 s, the drain's lease ran out, and the next drain queued
    behind its rows. Counted in buffers, not timed: the same plan reads the same pages on any machine."""
    from contacts.services import contacts_touch
    from conversations.models import Chat, Message

    now = timezone.now()
    with schema_context(tenant_a.schema_name):
        chats = Chat.objects.bulk_create(
            Chat(application=application_a, number=n, status=Chat.Status.WAITING, customer_id=f"load-5f3a9c-{n % 8}-{n}")
            for n in range(1, 2001)
        )
        Contact.objects.bulk_create(
            Contact(customer_id=chat.customer_id, chats_count=1, first_seen_at=now, last_seen_at=now) for chat in chats
        )
        later = now + timedelta(minutes=1)
        messages = Message.objects.bulk_create(
            Message(chat=chat, number=1, body="again", sender=Message.Sender.CUSTOMER, created_at=later) for chat in chats[:1000]
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'contacts_contact'::regclass")
            assert cursor.fetchone()[0] <= 0  # never analyzed: the planner has no statistics of these rows
        with plans_of("contacts_contact") as plans:
            contacts_touch(chat_ids=[], message_ids=[message.id for message in messages])

        assert Contact.objects.filter(last_seen_at=later).count() == 1000
        assert Contact.objects.filter(last_seen_at=now).count() == 1000
    # one unique-index probe and one updated row per customer (about 30 pages each, the indexes' new entries
    # included), not a trigram scan per customer (about 60 pages each at this size, growing with the contacts)
    read = sum(plan[0]["Shared Hit Blocks"] + plan[0]["Shared Read Blocks"] for plan in plans)
    assert read < 40_000, read
