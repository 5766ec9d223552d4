"""The notice a recording publishes after its commit: the statement's events with what the filter needs."""

import json

from django_tenants.utils import schema_context

from core.redis import get_redis
from events.envelope import webhook_envelope
from events.models import Event
from events.services import event_record, events_record
from stream.services import stream_channel, stream_listening_key


def _subscribed(tenant, *, listening: bool = True):
    if listening:  # as stream.fanout marks a tenant with an open stream
        get_redis().set(stream_listening_key(tenant.schema_name), 1, ex=60)
    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(stream_channel(tenant.schema_name))
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    return pubsub


def _published(pubsub) -> list:
    messages = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        messages.append(json.loads(message["data"]))
    return messages


def test_one_notice_per_recording_after_commit_with_the_filter_facts(tenant_a, django_capture_on_commit_callbacks):
    pubsub = _subscribed(tenant_a)
    try:
        with schema_context(tenant_a.schema_name), django_capture_on_commit_callbacks(execute=False) as callbacks:
            events_record(events=[("chat.created", {}, None, 7, False), ("message.created", {}, None, 7, True)])
            event_record(type="outbound.sent", data={})
            first, second, third = Event.objects.order_by("id")
        # nothing before the commit
        assert _published(pubsub) == []

        for callback in callbacks:
            callback()

        # one message per recording statement: [id, type, chat id, its assigned agent (no such chat: null), private,
        # public id, the webhook envelope]
        def notice(event, chat_id, private):
            return [event.id, event.type, chat_id, None, private, event.webhook_id, webhook_envelope(event).decode()]

        assert _published(pubsub) == [
            [notice(first, 7, False), notice(second, 7, True)],
            [notice(third, None, False)],
        ]
        assert json.loads(notice(first, 7, False)[6])["id"] == first.webhook_id
    finally:
        pubsub.close()


def test_with_no_stream_open_a_commit_publishes_nothing_and_queries_nothing(
    tenant_a, tenant_b, django_capture_on_commit_callbacks, django_assert_num_queries
):
    # tenant B has a stream open, tenant A has none
    get_redis().set(stream_listening_key(tenant_b.schema_name), 1, ex=60)
    pubsub = _subscribed(tenant_a, listening=False)
    try:
        with schema_context(tenant_a.schema_name), django_capture_on_commit_callbacks(execute=False) as callbacks:
            events_record(events=[("chat.created", {}, None, 7, False)])

        # the after-commit step asks Redis, not PostgreSQL, and publishes nothing (issue 18: one query per commit
        # that records events, in every tenant, with no stream anywhere)
        with django_assert_num_queries(0):
            for callback in callbacks:
                callback()
        assert _published(pubsub) == []
    finally:
        pubsub.close()
