"""Contacts: kept current by the drain, edited by staff, and erased on request (PRODUCT.md, "Contacts").

Erasure (`contact_erase`) removes everything held about one customer except what the tenant's other records
need: chat rows stay (chat numbers never repeat, and the reports count them) but lose the customer id. What
is removed and what stays is in docs/privacy.md.
"""

import json
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

from audit.services import audit_record, audit_targets_rename
from contacts.models import Contact
from contacts.selectors import customer_redis_records
from conversations import creations
from conversations.models import Chat, Message, Ticket
from core.exceptions import RetryLater
from core.prepared import prepared_cursor
from core.redis import get_redis, redis_script_load, tenant_key
from tenants.queues import task_wake_by_name
from tenants.work import CREATIONS_DRAIN_TASK

_CREATIONS_SCRUB = Path(__file__).resolve().parent / "scripts" / "creations_scrub.lua"


def _erased_chats_key() -> str:
    # "<application id>:<chat number>" of chats whose customer was erased (no customer id in it).
    return tenant_key(connection.schema_name, "contacts", "erased-chats")


# --- the drain's hook ---------------------------------------------------------------------------------------

# A batch's new chats and new customer messages: one upsert for all their customers, in customer-id order (the
# order every writer of contact rows takes them in, so two batches never deadlock on them). New chats add to
# `chats_count` and move `first_seen_at`; both move `last_seen_at`. A contact is found through ON CONFLICT, that
# is through the unique btree on customer_id, never through a join the planner may serve from the pg_trgm
# index on the same column: before a tenant's first ANALYZE it did, a bitmap scan of trigram posting lists per
# customer (customer ids sharing a prefix share trigrams), 12 s for one batch of 1,000 under the fault tests'
# load while the drain's lock waited. Every chat with a customer id has a contact (made with its first chat,
# removed only by erasure, which clears the chats' customer ids under the drain's lock), so a customer message
# only ever updates one; the row it would insert otherwise counts no chat.
_CONTACTS_UPSERT = """
INSERT INTO contacts_contact (customer_id, name, email, phone, attributes, chats_count, first_seen_at, last_seen_at,
                              created_at, updated_at)
SELECT seen.customer_id, '', '', '', '{}'::jsonb, sum(seen.chats), coalesce(min(seen.first_at), min(seen.at)),
       max(seen.at), now(), now()
FROM (
    SELECT chat.customer_id, 1 AS chats, chat.created_at AS first_at, chat.created_at AS at
    FROM conversations_chat AS chat
    WHERE chat.id = ANY(%(chat_ids)s)
    UNION ALL
    SELECT chat.customer_id, 0, NULL, message.created_at
    FROM conversations_message AS message JOIN conversations_chat AS chat ON chat.id = message.chat_id
    WHERE message.id = ANY(%(message_ids)s) AND message.sender = 'customer'
) AS seen
WHERE seen.customer_id IS NOT NULL AND seen.customer_id <> ''
GROUP BY seen.customer_id
ORDER BY seen.customer_id
ON CONFLICT (customer_id) DO UPDATE SET
    chats_count = contacts_contact.chats_count + EXCLUDED.chats_count,
    first_seen_at = least(contacts_contact.first_seen_at, EXCLUDED.first_seen_at),
    last_seen_at = greatest(contacts_contact.last_seen_at, EXCLUDED.last_seen_at),
    updated_at = now()
WHERE EXCLUDED.chats_count > 0 OR contacts_contact.last_seen_at < EXCLUDED.last_seen_at
"""

# Customer messages that reached a chat after its customer was erased: a delivery that had found the chat
# before the erasure and queued its message after it. Removed before their events are written (the drain
# records events last, from the rows), so nothing of the customer survives the erasure.
_DROP_ERASED = """
WITH dropped AS (
    DELETE FROM conversations_message AS message USING conversations_chat AS chat
    WHERE message.id = ANY(%s) AND message.sender = 'customer' AND chat.id = message.chat_id
      AND chat.customer_id IS NULL AND (chat.application_id || ':' || chat.number) = ANY(%s)
    RETURNING message.chat_id
)
UPDATE conversations_chat AS chat SET messages_count = chat.messages_count - d.removed
FROM (SELECT chat_id, count(*) AS removed FROM dropped GROUP BY chat_id) AS d WHERE chat.id = d.chat_id
"""


def contacts_touch(*, chat_ids: list[int], message_ids: list[int]) -> None:
    """Creates the contacts of a drain batch's new chats and keeps `chats_count`, `first_seen_at` and
    `last_seen_at` current, in the batch's transaction (one statement). Takes the ids of the rows this batch
    inserted, so a batch run twice (a drain that died before trimming) counts nothing twice."""
    with prepared_cursor() as cursor:
        if message_ids:
            erased = get_redis().smembers(_erased_chats_key())  # nearly always empty: one round trip
            if erased:
                cursor.execute(_DROP_ERASED, [message_ids, [label.decode() for label in erased]])
        if chat_ids or message_ids:
            cursor.execute(_CONTACTS_UPSERT, {"chat_ids": chat_ids, "message_ids": message_ids})


# --- staff edits --------------------------------------------------------------------------------------------

EDITABLE_FIELDS = ("name", "email", "phone", "attributes")


def contact_audit_target(customer_id: str) -> str:
    return f"contact {customer_id}"


def contact_update(*, contact: Contact, **changes) -> Contact:
    """Changes `name`, `email`, `phone`, `attributes` (validated by the caller). The audit entry names the
    fields changed, not their values: the log keeps no personal data an erasure would have to find."""
    with transaction.atomic():
        contact = Contact.objects.select_for_update().get(pk=contact.pk)
        fields = [name for name in EDITABLE_FIELDS if name in changes and getattr(contact, name) != changes[name]]
        for name in fields:
            setattr(contact, name, changes[name])
        if fields:
            contact.save(update_fields=[*fields, "updated_at"])
        audit_record(action="contact.updated", target=contact_audit_target(contact.customer_id), changes={"fields": fields} if fields else None, skip_if_unchanged=True)
    return contact


# --- erasure ------------------------------------------------------------------------------------------------

# What an erased ticket's title reads (the row stays: its status and dates are the team's work record).
ERASED_TEXT = "[erased]"

# The events of the customer's chats keep their type and ids (a receiver may still ask about a webhook-id it
# got) but lose the customer id and every text about them: message bodies and attachments, ticket texts.
_SCRUB_EVENTS = f"""
UPDATE events_event SET data = CASE
        WHEN type = 'message.created' THEN data || '{{"customer_id": null, "body": "", "attachments": []}}'::jsonb
        WHEN type LIKE 'ticket.%%' THEN data || '{{"title": "{ERASED_TEXT}", "description": ""}}'::jsonb
        WHEN data ? 'customer_id' THEN data || '{{"customer_id": null}}'::jsonb
        ELSE data END
WHERE chat_id = ANY(%s)
"""

_CANCEL_DELIVERIES = """
UPDATE events_delivery SET status = 'dead', last_error = 'Cancelled: the customer was erased.',
       claim_token = NULL, lease_expires_at = NULL
WHERE chat_id = ANY(%s) AND status IN ('pending', 'failed')
"""


def _drain_lock_wait() -> str:
    """The tenant's drain lock (conversations.creations), waited for up to CONTACTS_ERASURE_LOCK_WAIT_SECONDS:
    while an erasure holds it no batch commits, so the queued creations it rewrites stay where it found them."""
    deadline = time.monotonic() + settings.CONTACTS_ERASURE_LOCK_WAIT_SECONDS
    while True:
        token = creations.lock_acquire()
        if token is not None:
            return token
        if time.monotonic() > deadline:
            raise RetryLater("Chats are being persisted right now; retry the erasure shortly.", seconds=2)
        time.sleep(0.05)


def _creations_scrub(*, customer_id: str, chat_labels: set[str]) -> tuple[int, int, int, set[str]]:
    scrubbed, removed, dead_removed, queued = redis_script_load(_CREATIONS_SCRUB)(
        keys=[creations.pending_key(), creations.dead_key()], args=[customer_id, json.dumps(sorted(chat_labels))]
    )
    return scrubbed, removed, dead_removed, set(json.loads(queued))


def contact_erase(*, customer_id: str) -> dict:
    """Erases a customer: their chats' messages, their contact, their Redis records (open-chat records,
    integration records, stored delivery answers, queued creations: queued chats lose the id, queued messages
    go) and the data of their chats' events (deliveries not yet sent are cancelled). Chat rows stay, without
    the customer id. Every audit entry that named the contact is renamed, and one `contact.erased` entry
    records the erasure with no personal data. Returns the counts (the audit entry's `changes`).

    Runs holding the drain lock (no batch commits meanwhile) and, in one transaction, the customer's chat rows.
    A customer message that found the chat before the erasure but is queued after it is dropped when the
    drain persists it (contacts_touch, through the erased-chats set). Safe to repeat: a second call finds
    what the first left, if anything.
    """
    redis = get_redis()
    token = _drain_lock_wait()
    try:
        with transaction.atomic():
            chats = list(Chat.objects.select_for_update().filter(customer_id=customer_id).order_by("id"))
            contact = Contact.objects.select_for_update().filter(customer_id=customer_id).first()
            records = customer_redis_records(customer_id=customer_id, chats=[(c.application_id, c.number) for c in chats])
            labels = set(records["chats"])
            # Before anything else: new deliveries for the customer stop finding their chats in Redis.
            keys = [*records["open_chats"], *records["integration_records"], *records["delivery_answers"]]
            if labels:
                redis.sadd(_erased_chats_key(), *labels)
                redis.expire(_erased_chats_key(), settings.CONTACTS_ERASED_CHATS_TTL_SECONDS)
            if keys:
                redis.delete(*keys)
            scrubbed, removed, dead_removed, queued_labels = _creations_scrub(customer_id=customer_id, chat_labels=labels)
            chat_ids = [chat.id for chat in chats]
            _, deleted = Message.objects.filter(chat_id__in=chat_ids).delete()
            messages_deleted = deleted.get(Message._meta.label, 0)
            Chat.objects.filter(id__in=chat_ids).update(customer_id=None, messages_count=0)
            # Staff wrote them, but about the customer: their texts go, the rows stay (status, dates, agent).
            tickets_scrubbed = Ticket.objects.filter(chat_id__in=chat_ids).update(title=ERASED_TEXT, description="")
            with connection.cursor() as cursor:
                cursor.execute(_SCRUB_EVENTS, [chat_ids])
                events_scrubbed = cursor.rowcount
                cursor.execute(_CANCEL_DELIVERIES, [chat_ids])
                deliveries_cancelled = cursor.rowcount
            if contact is not None:
                contact.delete()
            # Again, for messages queued while this ran by deliveries that had found a chat before the records went.
            _, removed_late, _, _ = _creations_scrub(customer_id=customer_id, chat_labels=labels | queued_labels)
            erased_target = f"contact erased-{uuid.uuid4().hex[:12]}"
            audit_targets_rename(target=contact_audit_target(customer_id), new_target=erased_target)
            counts = {
                "chats": len(chats) + scrubbed,
                "messages": messages_deleted,
                "tickets_scrubbed": tickets_scrubbed,
                "queued_messages": removed + removed_late,
                "dead_creations": dead_removed,
                "events_scrubbed": events_scrubbed,
                "deliveries_cancelled": deliveries_cancelled,
                "redis_records": len(keys),
                "contact": contact is not None,
            }
            audit_record(action="contact.erased", target=erased_target, changes=counts)
    finally:
        # A drain that found the lock held by this erasure returned, trusting the holder to look again (as
        # conversations.services.counts_reconcile does).
        if creations.lock_hand_back(token):
            _drain_send()
    return counts


def _drain_send() -> None:
    # The task by its registered name, as the due-work dispatcher sends it: conversations.services calls this
    # app's drain hook, so importing its tasks module here would make the two apps' services depend on each other.
    task_wake_by_name(CREATIONS_DRAIN_TASK)


def contact_erase_needed(*, customer_id: str) -> bool:
    """Whether anything is held about this customer (the DELETE's 404 when nothing is)."""
    if Contact.objects.filter(customer_id=customer_id).exists() or Chat.objects.filter(customer_id=customer_id).exists():
        return True
    records = customer_redis_records(customer_id=customer_id, chats=[])
    return any(records[name] for name in ("open_chats", "integration_records", "queued_creations", "dead_creations"))
