"""Events: recording them in the change's transaction (the outbox), and the tenant's webhook endpoints.

Every change that makes an event calls one function here inside its own transaction, last (after its row
locks and its other work marks, the order every transaction that marks takes). One statement writes the
events and, in a CTE, one delivery per subscribed active endpoint; the tenant's `webhooks` work mark and a
delivery run sent on commit follow when a delivery was made. No event without its change (it rolls back
with it) and no change without its event.
"""

import base64
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from audit.services import audit_record
from core.exceptions import Conflict
from core.redis import get_redis, tenant_key
from core.prepared import prepared_cursor, when_answered
from events.envelope import event_time
from events.models import Delivery, Event, WebhookEndpoint
from events.retention import events_retention_mark
from stream.services import stream_notices_on_commit
from tenants.models import TenantWork
from tenants.work import tenant_work_mark, tenant_work_soon

logger = logging.getLogger(__name__)

CHAT_CREATED = "chat.created"
CHAT_ASSIGNED = "chat.assigned"
CHAT_TRANSFERRED = "chat.transferred"
CHAT_RESOLVED = "chat.resolved"
MESSAGE_CREATED = "message.created"
TICKET_CREATED = "ticket.created"
TICKET_UPDATED = "ticket.updated"
OUTBOUND_SENT = "outbound.sent"
OUTBOUND_FAILED = "outbound.failed"
CHAT_SLA_BREACHED = "chat.sla_breached"
EVENT_TYPES = (
    CHAT_CREATED, CHAT_ASSIGNED, CHAT_TRANSFERRED, CHAT_RESOLVED, MESSAGE_CREATED,
    TICKET_CREATED, TICKET_UPDATED, OUTBOUND_SENT, OUTBOUND_FAILED, CHAT_SLA_BREACHED,
)  # fmt: skip

_SCHEDULED_TTL_SECONDS = 30


def _iso(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# --- recording --------------------------------------------------------------------------------------------

# `source` yields (type, data, application_id, chat_id, is_private, source_key, ordinal); events get their ids
# in `ordinal` order (a chat's creation before its first message). ON CONFLICT: a change written again (a
# drain batch re-run after a crash) keeps its first event and makes no second delivery.
_RECORD = """
WITH source AS ({source}),
recorded AS (
    INSERT INTO events_event (public_id, type, created_at, data, application_id, chat_id, is_private, source_key)
    SELECT gen_random_uuid(), source.type, %(now)s, source.data, source.application_id, source.chat_id,
           source.is_private, source.source_key
    FROM source ORDER BY source.ordinal
    ON CONFLICT (source_key) DO NOTHING
    RETURNING id, type, application_id, chat_id, is_private
)
INSERT INTO events_delivery (id, event_id, endpoint_id, chat_id, status, attempts, next_attempt_at, created_at)
SELECT gen_random_uuid(), recorded.id, endpoint.id, recorded.chat_id, 'pending', 0, %(now)s, %(now)s
FROM recorded JOIN events_webhookendpoint AS endpoint
  ON endpoint.is_active
 AND ('*' = ANY(endpoint.events) OR recorded.type = ANY(endpoint.events))
 AND (endpoint.application_id IS NULL OR endpoint.application_id = recorded.application_id)
 AND (NOT recorded.is_private OR endpoint.include_private)
"""

_SOURCE_ROWS = """
SELECT * FROM unnest(%(types)s::text[], %(data)s::jsonb[], %(application_ids)s::bigint[], %(chat_ids)s::bigint[],
                     %(private)s::boolean[], %(source_keys)s::text[]) WITH ORDINALITY
    AS source(type, data, application_id, chat_id, is_private, source_key, ordinal)
"""

# The /api/chats item with its application's token, as the chat is now: its SLA (routing's, null under no
# policy) and its label names, sorted, as the staff inbox shows them (conversations.apis.InboxChatOutputSerializer).
_CHAT_DATA = f"""jsonb_build_object(
    'number', chat.number, 'status', chat.status, 'customer_id', chat.customer_id,
    'assigned_agent', chat.assigned_agent_id, 'messages_count', chat.messages_count,
    'created_at', {_iso("chat.created_at")}, 'assigned_at', {_iso("chat.assigned_at")},
    'resolved_at', {_iso("chat.resolved_at")}, 'application', application.token,
    'sla', (SELECT jsonb_build_object('first_response_due_at', {_iso("sla.first_response_due_at")},
                                      'resolution_due_at', {_iso("sla.resolution_due_at")}, 'breached', sla.breached)
            FROM routing_chatsla AS sla WHERE sla.chat_id = chat.id),
    'labels', coalesce((SELECT jsonb_agg(label.name ORDER BY label.name)
                        FROM workspace_chatlabel AS chat_label JOIN workspace_label AS label ON label.id = chat_label.label_id
                        WHERE chat_label.chat_id = chat.id), '[]'::jsonb))"""

_SOURCE_CHATS = f"""
SELECT %(type)s::text AS type, {_CHAT_DATA} AS data, chat.application_id, chat.id AS chat_id, false AS is_private,
       NULL::text AS source_key, row_number() OVER (ORDER BY chat.id) AS ordinal
FROM conversations_chat AS chat JOIN conversations_application AS application ON application.id = chat.application_id
WHERE chat.id = ANY(%(chat_ids)s)
"""

# A drain batch's new chats and messages, found by their numbers (the batch's INSERTs return no ids).
_SOURCE_CREATIONS = f"""
SELECT 'chat.created'::text AS type, {_CHAT_DATA} AS data, chat.application_id, chat.id AS chat_id,
       false AS is_private, 'chat.created:' || chat.id AS source_key, 0 AS phase, chat.id AS o1, 0 AS o2
FROM unnest(%(chat_apps)s::bigint[], %(chat_numbers)s::integer[]) AS r(app, number)
JOIN conversations_chat AS chat ON chat.application_id = r.app AND chat.number = r.number
JOIN conversations_application AS application ON application.id = chat.application_id
UNION ALL
SELECT 'message.created', jsonb_build_object(
           'application', application.token, 'chat_number', chat.number, 'number', message.number,
           'body', message.body, 'sender', message.sender, 'customer_id', chat.customer_id,
           'agent_email', CASE WHEN message.sender = 'agent' THEN author.email END,
           'private', message.is_private, 'attachments', message.attachments),
       chat.application_id, chat.id, message.is_private, 'message.created:' || message.id, 1, chat.id, message.number
FROM unnest(%(message_apps)s::bigint[], %(message_chats)s::integer[], %(message_numbers)s::integer[])
     AS r(app, chat_number, number)
JOIN conversations_chat AS chat ON chat.application_id = r.app AND chat.number = r.chat_number
JOIN conversations_message AS message ON message.chat_id = chat.id AND message.number = r.number
JOIN conversations_application AS application ON application.id = chat.application_id
LEFT JOIN core_user AS author ON author.id = message.author_id
"""


def _record(*, source: str, params: dict) -> None:
    """Writes the events `source` yields and their deliveries; schedules delivery if any. In the caller's
    transaction (opened here if it has none)."""
    now = timezone.now()
    # No savepoint inside the caller's transaction (two round trips per recording, in every drain batch and
    # assignment run): a failure here must undo the change anyway, so the whole transaction goes.
    with transaction.atomic(savepoint=False):
        cursor = prepared_cursor()
        cursor.execute(_RECORD.format(source=source), {**params, "now": now})

        def recorded() -> None:
            # Whether deliveries were made is known once the statement is answered: at once, or, in a pipelined
            # drain batch or assignment run, as it ends (core.prepared.when_answered), where it costs no round
            # trip; the `webhooks` mark then comes after the block's other marks, the last kind in their order.
            with cursor:
                deliveries = cursor.rowcount
            if deliveries:
                webhook_deliveries_schedule()

        when_answered(recorded)
        stream_notices_on_commit(recorded_at=now)
        events_retention_mark()


def event_record(*, type: str, data: dict, application_id: int | None = None, chat_id: int | None = None,
                 is_private: bool = False) -> None:  # fmt: skip
    """Records one event in the caller's transaction (see the module's docstring)."""
    events_record(events=[(type, data, application_id, chat_id, is_private)])


def events_record(*, events: list[tuple[str, dict, int | None, int | None, bool]]) -> None:
    """Records events (type, data, application id, chat id, private) in one statement, in this order."""
    if not events:
        return
    from psycopg.types.json import Jsonb

    _record(
        source=_SOURCE_ROWS,
        params={
            "types": [event[0] for event in events],
            "data": [Jsonb(event[1]) for event in events],
            "application_ids": [event[2] for event in events],
            "chat_ids": [event[3] for event in events],
            "private": [event[4] for event in events],
            "source_keys": [None] * len(events),
        },
    )


def events_record_chats(*, type: str, chat_ids: list[int]) -> None:
    """Records `type` for each chat (its /api/chats item as it is now, built in the statement)."""
    if chat_ids:
        _record(source=_SOURCE_CHATS, params={"type": type, "chat_ids": list(chat_ids)})


def events_record_creations(*, records: list[dict]) -> None:
    """Records `chat.created` and `message.created` for a drain batch's records (conversations.creations), one
    statement for the batch. Records of rows a previous run already wrote are skipped (their events exist)."""
    chats = [record for record in records if record["kind"] == "chat"]
    messages = [record for record in records if record["kind"] == "message"]
    if not chats and not messages:
        return
    source = f"""
SELECT type, data, application_id, chat_id, is_private, source_key,
       row_number() OVER (ORDER BY phase, o1, o2) AS ordinal
FROM ({_SOURCE_CREATIONS}) AS batch_source
"""
    _record(
        source=source,
        params={
            "chat_apps": [record["app"] for record in chats],
            "chat_numbers": [record["number"] for record in chats],
            "message_apps": [record["app"] for record in messages],
            "message_chats": [record["chat"] for record in messages],
            "message_numbers": [record["number"] for record in messages],
        },
    )


def ticket_event_data(ticket) -> dict:
    """The ticket as the tickets API shows it."""
    return {
        "id": ticket.id,
        "application": ticket.chat.application.token,
        "chat_number": ticket.chat.number,
        "title": ticket.title,
        "description": ticket.description,
        "status": ticket.status,
        "priority": ticket.priority,
        "assigned_agent": ticket.assigned_agent_id,
        "created_at": event_time(ticket.created_at),
        "updated_at": event_time(ticket.updated_at),
    }


def event_record_ticket(*, type: str, ticket) -> None:
    """Records `ticket.created` / `ticket.updated` in the caller's transaction; ordered with its chat's events."""
    event_record(type=type, data=ticket_event_data(ticket), application_id=ticket.chat.application_id, chat_id=ticket.chat_id)


# --- scheduling delivery ------------------------------------------------------------------------------------


def _scheduled_key() -> str:
    return tenant_key(connection.schema_name, "webhooks", "scheduled")


def _deliveries_task_send(schema_name: str) -> None:
    from events.tasks import webhook_deliveries_send_task
    from tenants.queues import task_wake

    with schema_context(schema_name):
        # One queued run is enough: it claims everything due when it starts, and goes round again while new
        # deliveries come. The run clears the flag first thing, so deliveries made after that send another.
        if get_redis().set(_scheduled_key(), 1, nx=True, ex=_SCHEDULED_TTL_SECONDS):
            task_wake(webhook_deliveries_send_task)


def webhook_deliveries_schedule() -> None:
    """A delivery run for this tenant once the current transaction commits (the fast path), and the tenant's
    `webhooks` mark in it (the safety net: the dispatcher sends a run if that one is lost)."""
    schema_name = connection.schema_name
    tenant_work_mark(kind=TenantWork.Kind.WEBHOOKS, due_at=tenant_work_soon())
    transaction.on_commit(lambda: _deliveries_task_send(schema_name))


def webhook_deliveries_continue() -> None:
    """The tenant's next run at once: a run that ended with deliveries due (its time was up while more came,
    or its last answers released chats' next events) hands over to a new one instead of leaving them to the
    dispatcher's safety net."""
    _deliveries_task_send(connection.schema_name)


def webhook_deliveries_scheduled_clear() -> None:
    get_redis().delete(_scheduled_key())


# --- endpoints ----------------------------------------------------------------------------------------------


def _new_secret() -> str:
    # 24 random bytes, as Standard Webhooks' reference libraries make them: `whsec_` + base64.
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def webhook_endpoint_create(
    *, url: str, events: list[str], application=None, description: str = "", include_private: bool = False
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (its `secret` is readable on the returned object only now)."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            url=url, events=events, application=application, description=description,
            include_private=include_private, secret=_new_secret(),
        )  # fmt: skip
        audit_record(action="webhook_endpoint.created", target=endpoint, changes={"url": url, "events": events, "application": application, "include_private": include_private})
    return endpoint


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    """Changes `url`, `events`, `description`, `include_private`, `is_active`. Reactivating an endpoint clears
    its failure record (a new 24 h count starts)."""
    fields = [name for name, value in changes.items() if getattr(endpoint, name) != value]
    for name in fields:
        setattr(endpoint, name, changes[name])
    if "is_active" in fields and endpoint.is_active:
        endpoint.failing_since = None
        endpoint.deactivated_at = None
        fields += ["failing_since", "deactivated_at"]
    if fields:
        with transaction.atomic():  # the change and its audit entry together
            endpoint.save(update_fields=[*fields, "updated_at"])
            if "is_active" in fields and endpoint.is_active:
                webhook_deliveries_schedule()  # its waiting deliveries go now
            audit_record(action="webhook_endpoint.updated", target=endpoint, changes={name: changes[name] for name in fields if name in changes})
    return endpoint


# The endpoint's deliveries and their attempts in SQL, in one transaction with the endpoint: an endpoint with a
# long delivery log is not loaded row by row to cascade. A run with one of them in flight records nothing for
# it (its outcome write finds no row) and claims none of them again.
_ENDPOINT_DELETE = """
WITH attempts AS (
    DELETE FROM events_deliveryattempt AS attempt USING events_delivery AS delivery
    WHERE attempt.delivery_id = delivery.id AND delivery.endpoint_id = %(endpoint_id)s
),
deliveries AS (
    DELETE FROM events_delivery WHERE endpoint_id = %(endpoint_id)s
)
DELETE FROM events_webhookendpoint WHERE id = %(endpoint_id)s
"""


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Deletes the endpoint with its deliveries and their attempts; nothing more is sent to it."""
    with transaction.atomic(), connection.cursor() as cursor:
        audit_record(action="webhook_endpoint.deleted", target=endpoint, changes={"url": endpoint.url})
        cursor.execute(_ENDPOINT_DELETE, {"endpoint_id": endpoint.id})


def webhook_endpoint_rotate_secret(*, endpoint_id: uuid.UUID) -> str:
    """A new secret; the old one keeps signing a second signature for EVENTS_SECRET_ROTATION_OVERLAP_SECONDS,
    so receivers can switch without losing a delivery. Returns the new secret.

    Conflict (409) within EVENTS_SECRET_ROTATION_MIN_INTERVAL_SECONDS of the last rotation: two rotations at
    once (a double submit) would leave the first one's new secret, which no receiver has yet, as the one that
    keeps signing, and the secret receivers use would stop at once. The row lock orders concurrent requests:
    exactly one rotates."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(id=endpoint_id)
        now = timezone.now()
        interval = timedelta(seconds=settings.EVENTS_SECRET_ROTATION_MIN_INTERVAL_SECONDS)
        if endpoint.secret_rotated_at and endpoint.secret_rotated_at > now - interval:
            raise Conflict("The secret was rotated less than a minute ago; use the secret that rotation returned.")
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + timedelta(seconds=settings.EVENTS_SECRET_ROTATION_OVERLAP_SECONDS)
        endpoint.secret = _new_secret()
        endpoint.secret_rotated_at = now
        endpoint.save(
            update_fields=["secret", "previous_secret", "previous_secret_expires_at", "secret_rotated_at", "updated_at"]
        )
        audit_record(action="webhook_endpoint.secret_rotated", target=endpoint)
    return endpoint.secret


def webhook_delivery_redeliver(*, delivery_id: uuid.UUID) -> Delivery:
    """Sends a delivery again with the same `webhook-id` and a fresh set of attempts. Changes nothing while the
    delivery is already queued and untried, or being sent (claimed under a live lease): it is going out, and a
    second request at once must not send it twice. 409 while its endpoint is inactive (nothing would send it)."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().select_related("endpoint").get(id=delivery_id)
        if not delivery.endpoint.is_active:
            raise Conflict("The endpoint is inactive; activate it first.")
        now = timezone.now()
        in_flight = delivery.claim_token is not None and delivery.lease_expires_at and delivery.lease_expires_at > now
        queued = delivery.status == Delivery.Status.PENDING and delivery.attempts == 0 and delivery.claim_token is None
        if in_flight or queued:
            return delivery
        delivery.status = Delivery.Status.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.claim_token = None
        delivery.lease_expires_at = None
        delivery.save(update_fields=["status", "attempts", "next_attempt_at", "claim_token", "lease_expires_at"])
        webhook_deliveries_schedule()
    return delivery
