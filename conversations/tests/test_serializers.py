import datetime
import zoneinfo

import pytest
from django.utils import timezone
from rest_framework import serializers

from conversations.apis import MessageOutputSerializer
from conversations.models import Chat, Message

UTC = datetime.timezone.utc
ATTACHMENT = {"url": "https://cdn.example.com/a.png", "mime_type": "image/png", "size": 2048, "name": "a.png"}


def _message(**fields) -> Message:
    values = {
        "chat": Chat(number=3),
        "number": 7,
        "body": "Halo, pesanan saya belum sampai 📦",
        "sender": Message.Sender.CUSTOMER,
        "created_at": datetime.datetime(2026, 11, 22, 8, 30, 1, 123456, tzinfo=UTC),
        "updated_at": datetime.datetime(2026, 11, 22, 8, 30, 1, tzinfo=UTC),
    }
    return Message(**{**values, **fields})


def _drf_representation(message: Message) -> dict:
    # DRF's own walk over the declared fields, which MessageOutputSerializer.to_representation replaces
    return serializers.Serializer.to_representation(MessageOutputSerializer(), message)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"sender": Message.Sender.AGENT},
        {"sender": "system"},  # as loaded from the database: a plain string, not the enum
        {"body": ""},
        {"created_at": datetime.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Jakarta"))},
        # naive datetimes: the fast path steps aside and DRF makes them aware
        {"created_at": datetime.datetime(2026, 1, 1, 12, 0), "updated_at": datetime.datetime(2026, 1, 1, 12, 0, 5)},
        # a private note with attachments (issue 25)
        {"is_private": True, "attachments": [ATTACHMENT, {**ATTACHMENT, "size": 0, "name": "b.pdf"}]},
    ],
)
@pytest.mark.parametrize("zone", [None, "Asia/Jakarta", "America/St_Johns"])
def test_message_output_is_what_drf_makes_of_the_declared_fields(fields, zone):
    message = _message(**fields)

    with timezone.override(zone) if zone else timezone.override(timezone.get_default_timezone()):
        fast = MessageOutputSerializer(message).data
        drf = _drf_representation(message)

    assert fast == drf
    assert list(fast) == ["chat_number", "number", "body", "sender", "created_at", "updated_at", "private", "attachments"]
    assert all(type(value) in (int, str, bool, list) for value in fast.values())
    assert fast["private"] is message.is_private and fast["attachments"] == message.attachments


def test_message_output_writes_utc_with_a_z():
    assert MessageOutputSerializer(_message()).data == {
        "chat_number": 3,
        "number": 7,
        "body": "Halo, pesanan saya belum sampai 📦",
        "sender": "customer",
        "created_at": "2026-11-22T08:30:01.123456Z",
        "updated_at": "2026-11-22T08:30:01Z",
        "private": False,
        "attachments": [],
    }


def test_a_page_of_messages_is_serialized_the_same_way():
    messages = [_message(number=number, sender=Message.Sender.AGENT if number % 2 else "customer") for number in range(1, 6)]

    fast = MessageOutputSerializer(messages, many=True).data

    assert fast == [_drf_representation(message) for message in messages]


def test_a_page_row_is_serialized_as_its_message(tenant_a, application_a, drain):
    # given messages persisted, read back as a page reads them (named rows) and as models
    from django_tenants.utils import schema_context

    from conversations import selectors, services

    with schema_context(tenant_a.schema_name):
        number = services.chat_create(application=application_a)
        for body in ("first", "second 📦", "refund please"):
            services.message_create(application=application_a, chat_number=number, body=body)
        services.message_create(
            application=application_a, chat_number=number, body="a note", is_private=True, attachments=[ATTACHMENT]
        )
        drain(tenant_a)
        chat = Chat.objects.get(application=application_a, number=number)
        rows = list(selectors.message_list(chat=chat, include_private=True).order_by("number"))
        models = list(Message.objects.filter(chat=chat).select_related("chat").order_by("number"))
        searched = selectors.message_search_page(chat=chat, query="REFUND", after=0, limit=10).messages

    # then each row serializes exactly as its model does, through the fast path and through DRF's walk
    assert [tuple(row) for row in rows][0][:2] == (number, 1)
    assert MessageOutputSerializer(rows[3]).data["attachments"] == [ATTACHMENT] and len(rows) == 4
    assert MessageOutputSerializer(rows, many=True).data == MessageOutputSerializer(models, many=True).data
    assert [_drf_representation(row) for row in rows] == [_drf_representation(model) for model in models]
    assert MessageOutputSerializer(searched, many=True).data == [MessageOutputSerializer(models[2]).data]
