import json
import logging
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from agents.services import assignment_runs_deferred, assignment_schedule
from audit.services import audit_record
from contacts.services import contacts_touch
from conversations import creations, inbound
from conversations.access import chat_access_check
from conversations.lock_objects import chat_lock
from conversations.models import Application, Chat, InboundEvent, Message, Ticket
from conversations.selectors import chat_open_for_customer_get
from core.exceptions import Conflict, RetryLater
from core.models import User
from core.prepared import pipelined, prepared_cursor
from core.text import storable_text
from events.services import TICKET_CREATED, TICKET_UPDATED, event_record_ticket, events_record_creations
from reports.services import report_creations_persisted
from routing.sla import routing_creations_persisted
from tenants.models import TenantWork
from tenants.work import tenant_work_mark, tenant_work_marks_batched

logger = logging.getLogger(__name__)


# Longest error text kept on an event: enough for a database message and its context line.
LAST_ERROR_MAX_LENGTH = 2000


def inbound_event_record(*, event_id: uuid.UUID, payload: dict, created_at: datetime, attempt: int = 1) -> InboundEvent:
    """Persists an accepted event once: a redelivered message finds its row and writes nothing.

    A row left `accepted` or `dead` by earlier failed attempts becomes `processed` when an attempt works.
    """
    with transaction.atomic():
        event, created = InboundEvent.objects.select_for_update().get_or_create(
            id=event_id,
            defaults={
                "payload": payload,
                "created_at": created_at,
                "attempts": attempt,
                "status": InboundEvent.Status.PROCESSED,
            },
        )
        if not created and event.status != InboundEvent.Status.PROCESSED:
            event.payload, event.raw_payload, event.last_error = payload, "", ""
            event.status, event.attempts = InboundEvent.Status.PROCESSED, max(event.attempts, attempt)
            event.save(update_fields=["payload", "raw_payload", "last_error", "status", "attempts", "updated_at"])
    return event


def _error_summary(error: BaseException) -> str:
    """What an operator reads in `last_error` (the platform API and the admin show it): the error's class and
    first line. A database error goes on with DETAIL, CONTEXT and LINE lines that quote the statement or the
    data near the fault; those stay in the worker's log. Cleaned, as it may quote the payload (a NUL)."""
    first_line = str(error).split("\n", 1)[0].strip()
    return storable_text(f"{error.__class__.__name__}: {first_line}", max_length=LAST_ERROR_MAX_LENGTH)


def inbound_event_attempt_failed(
    *, event_id: uuid.UUID, payload: dict, created_at: datetime, attempt: int, error: BaseException, is_final: bool
) -> InboundEvent | None:
    """Records a failed attempt to persist an event: `accepted` (a retry follows) or `dead` (parked).

    The payload is kept as JSON text in `raw_payload` in any case, and in `payload` too when the database
    takes it (it refuses, for example, a NUL character in a jsonb string). Never overwrites a processed row.
    """
    raw_payload = json.dumps(payload)  # ASCII-escaped: storable as text even when jsonb refuses it
    fields = {
        "created_at": created_at,
        "raw_payload": raw_payload,
        "status": InboundEvent.Status.DEAD if is_final else InboundEvent.Status.ACCEPTED,
        "attempts": attempt,
        "last_error": _error_summary(error),
    }
    for stored_payload in (payload, None):
        try:
            with transaction.atomic():
                event = InboundEvent.objects.select_for_update().filter(id=event_id).first()
                if event is not None and event.status == InboundEvent.Status.PROCESSED:
                    return event  # a concurrent delivery of the same event made it
                event, _ = InboundEvent.objects.update_or_create(
                    id=event_id, defaults={**fields, "payload": stored_payload}
                )
                return event
        except DataError:
            if stored_payload is None:
                raise
    return None


# --- applications ----------------------------------------------------------------------------------------


def application_create(*, name: str) -> Application:
    return Application.objects.create(name=name)


def application_update(*, application: Application, name: str) -> Application:
    application.name = name
    application.save(update_fields=["name", "updated_at"])
    return application


# --- chats and messages: allocated now, persisted by a task -------------------------------------------------


def _largest_chat_number(application_id: int) -> int:
    return Chat.objects.filter(application_id=application_id).aggregate(largest=Max("number"))["largest"] or 0


def _largest_message_number(application_id: int, chat_number: int) -> int:
    largest = Message.objects.filter(chat__application_id=application_id, chat__number=chat_number).aggregate(
        largest=Max("number")
    )["largest"]
    return largest or 0


def _drain_schedule() -> None:
    from conversations.tasks import creations_persist_task
    from tenants.queues import task_wake

    # Sent in the request's tenant context: runs in this tenant's schema, on its queue. The records wait in
    # Redis; if the broker is away the sweep drains them later.
    task_wake(creations_persist_task)


def chat_create(*, application: Application, customer_id: str | None = None) -> int:
    """Allocates the application's next chat number and queues the chat's creation; returns the number.

    Writes nothing to PostgreSQL: a task persists the row (see conversations.creations).
    """
    record = _chat_record(application=application, customer_id=customer_id)
    number, drain_needed = creations.chat_number_allocate(
        application_id=application.id, record=record, seed_from=lambda: _largest_chat_number(application.id)
    )
    if drain_needed:
        _drain_schedule()
    return number


def message_create(
    *,
    application: Application,
    chat_number: int,
    body: str,
    sender: str = Message.Sender.CUSTOMER,
    author: User | None = None,
    is_private: bool = False,
    attachments: list[dict] | None = None,
    delivery: tuple[str, str, int] | None = None,
) -> int | None:
    """Allocates the chat's next message number and queues the message; None if the chat number was
    never allocated. Writes nothing to PostgreSQL. `delivery`: see creations.message_number_allocate."""
    record = {
        "kind": "message",
        "app": application.id,
        "chat": chat_number,
        "body": body,
        "sender": sender,
        "author": author.id if author is not None else None,
        "at": timezone.now().isoformat(),
    }
    # Only when set: most messages are neither, and every key is stored in Redis until the drain.
    if is_private:
        record["private"] = True
    if attachments:
        record["attachments"] = attachments
    allocated = creations.message_number_allocate(
        application_id=application.id,
        chat_number=chat_number,
        record=record,
        seed_chats_from=lambda: _largest_chat_number(application.id),
        seed_messages_from=lambda: _largest_message_number(application.id, chat_number),
        delivery=delivery,
    )
    if allocated is None:
        return None
    number, drain_needed = allocated
    if drain_needed:
        _drain_schedule()
    return number


def message_update(*, message: Message, body: str) -> Message:
    message.body = body
    message.save(update_fields=["body", "updated_at"])
    return message


# --- the inbound channel webhook ----------------------------------------------------------------------------

# How long a delivery waits for an identical one being handled at the same moment to store its answer.
DELIVERY_WAIT_SECONDS = 2.0


def _chat_record(*, application: Application, customer_id: str | None) -> dict:
    """A chat's creation as queued (conversations.creations), shared by chat_create and the webhook."""
    return {"kind": "chat", "app": application.id, "customer_id": customer_id, "at": timezone.now().isoformat()}


def _customer_open_chat_number(*, application: Application, customer_id: str) -> int:
    """The number of the customer's open chat, opening one (queued like any chat) if there is none.

    Redis remembers the chat a webhook opened for the customer, because that chat may be allocated but not
    yet persisted; the row, once it exists, has the last word (a resolved chat is forgotten), and without a
    record PostgreSQL is asked. A new chat is allocated only by the script that also records it, so of two
    deliveries for a new customer one opens the chat and the other finds it.
    """
    ids = {"application_id": application.id, "customer_id": customer_id}
    for _ in range(3):
        remembered = inbound.open_chat_get(**ids)
        if remembered is not None:
            status = Chat.objects.filter(application=application, number=remembered).values_list("status", flat=True).first()
            if status != Chat.Status.RESOLVED:
                return remembered  # open, or not persisted yet
            inbound.open_chat_forget(**ids, chat_number=remembered)
            continue
        persisted = chat_open_for_customer_get(application=application, customer_id=customer_id)
        if persisted is not None:
            if inbound.open_chat_remember(**ids, chat_number=persisted.number):
                return persisted.number
            continue  # another request recorded a chat meanwhile: read it
        number, drain_needed, _created = creations.chat_number_allocate_unless_open(
            application_id=application.id,
            record=_chat_record(application=application, customer_id=customer_id),
            seed_from=lambda: _largest_chat_number(application.id),
            open_chat_key=inbound.open_chat_key(**ids),
            open_chat_ttl=inbound.OPEN_CHAT_TTL_SECONDS,
        )
        if drain_needed:
            _drain_schedule()
        return number
    raise Conflict("The customer's chat changed while this delivery was handled; retry.")


def _delivery_claim(*, application: Application, external_id: str) -> inbound.Delivery:
    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while True:
        delivery = inbound.delivery_claim(application_id=application.id, external_id=external_id)
        if delivery.claim is not None or delivery.answer is not None:
            return delivery
        if time.monotonic() > deadline:
            raise RetryLater("A delivery with this external_id is being handled; retry shortly.", seconds=1)
        # An identical delivery holds the claim; its answer is normally stored within milliseconds.
        time.sleep(0.02)


def webhook_message_receive(
    *, application: Application, customer_id: str, body: str, external_id: str | None = None, attachments: list[dict] | None = None
) -> dict:
    """Appends an inbound customer message to the customer's open chat, or to a new one; returns
    `{"chat_number", "message_number"}`. Writes nothing to PostgreSQL (both go through the creations queue).

    With an `external_id`, a repeated delivery gets the first answer and queues nothing: the delivery is
    claimed (SET NX) before anything is allocated, and its answer replaces the claim in the same atomic step
    that queues the message. If handling fails before that, the claim is released for the retry; a chat
    opened meanwhile stays recorded as the customer's open chat, so the retry reuses it.
    """
    delivery = None
    if external_id is not None:
        delivery = _delivery_claim(application=application, external_id=external_id)
        if delivery.answer is not None:
            return delivery.answer
    try:
        for _ in range(2):
            chat_number = _customer_open_chat_number(application=application, customer_id=customer_id)
            message_number = message_create(
                application=application,
                chat_number=chat_number,
                body=body,
                sender=Message.Sender.CUSTOMER,
                attachments=attachments,
                delivery=(delivery.key, delivery.claim, settings.WEBHOOK_IDEMPOTENCY_TTL_SECONDS) if delivery else None,
            )
            if message_number is not None:
                return {"chat_number": chat_number, "message_number": message_number}
            # The record names a chat Redis never allocated (its counters were lost and re-seeded): open anew.
            inbound.open_chat_forget(application_id=application.id, customer_id=customer_id, chat_number=chat_number)
        raise Conflict("The customer's chat could not be found or opened; retry.")
    except creations.DeliveryClaimLost as error:
        # Our claim expired and an identical delivery took over; it will answer.
        raise Conflict("A delivery with this external_id is being handled; retry shortly.") from error
    except BaseException:
        if delivery is not None:
            inbound.delivery_abandon(delivery=delivery)
        raise


# --- tickets ------------------------------------------------------------------------------------------------


def ticket_create(*, chat: Chat, title: str, description: str, priority: str, created_by: User) -> Ticket:
    """Escalates a chat to a ticket, owned by the agent who escalated it. Only the chat's assigned agent or an
    admin may (PermissionDenied otherwise), checked on the locked chat row, so a transfer committed meanwhile
    is seen. One ticket per chat: the unique index decides between concurrent escalations, and the loser gets
    a Conflict (409)."""
    try:
        with transaction.atomic():
            chat = chat_lock(chat_id=chat.id)
            chat_access_check(chat=chat, user=created_by, action="escalate it")
            ticket = Ticket.objects.create(
                chat=chat,
                title=title,
                description=description,
                priority=priority,
                assigned_agent=created_by,
                created_by=created_by,
            )
            event_record_ticket(type=TICKET_CREATED, ticket=ticket)
            return ticket
    except IntegrityError as error:
        if getattr(error.__cause__, "sqlstate", None) != "23505":  # anything but the unique violation
            raise
        raise Conflict("This chat already has a ticket.") from error


def ticket_status_set(*, ticket: Ticket, status: str) -> Ticket:
    """Sets a ticket's status; its `ticket.updated` event is written under the chat's row lock (taken first,
    conversations.lock_objects' order), so it is ordered with the chat's other events: no event of the chat
    committed later can have a smaller id."""
    with transaction.atomic():  # the change and its event together
        chat_lock(chat_id=ticket.chat_id)
        ticket.status = status
        ticket.save(update_fields=["status", "updated_at"])
        event_record_ticket(type=TICKET_UPDATED, ticket=ticket)
        audit_record(action="ticket.status_changed", target=ticket, changes={"status": status})
    return ticket


# The chats, and each application's chats_count raised by those it really inserted (a row already there, from
# a drain that died before trimming the list, is skipped and not counted twice): one statement, so that nothing
# waits for its answer before the messages are sent (the batch is pipelined, core.prepared).
_INSERT_CHATS = """
WITH inserted AS (
    INSERT INTO conversations_chat (application_id, number, status, customer_id, messages_count, created_at, updated_at)
    SELECT r.app, r.number, 'waiting', r.customer_id, 0, r.at, r.at
    FROM unnest(%s::bigint[], %s::integer[], %s::text[], %s::timestamptz[]) AS r(app, number, customer_id, at)
    ON CONFLICT (application_id, number) DO NOTHING
    RETURNING application_id, id
),
counted AS (
    UPDATE conversations_application AS app SET chats_count = app.chats_count + added.n
    FROM (SELECT application_id, count(*) AS n FROM inserted GROUP BY application_id) AS added
    WHERE app.id = added.application_id
)
SELECT application_id, id FROM inserted
"""

_INSERT_MESSAGES = """
INSERT INTO conversations_message (chat_id, number, body, sender, author_id, created_at, updated_at, is_private,
                                   attachments)
SELECT chat.id, r.number, r.body, r.sender, author.id, r.at, r.at, r.is_private, r.attachments::jsonb
FROM unnest(%s::bigint[], %s::integer[], %s::integer[], %s::text[], %s::text[], %s::bigint[], %s::timestamptz[],
            %s::boolean[], %s::text[])
     AS r(app, chat_number, number, body, sender, author, at, is_private, attachments)
JOIN conversations_chat AS chat ON chat.application_id = r.app AND chat.number = r.chat_number
LEFT JOIN core_user AS author ON author.id = r.author
ON CONFLICT (chat_id, number) DO NOTHING
RETURNING chat_id, id, is_private
"""

# The messages (above), and each chat's messages_count raised by those inserted that the customer sees (private
# notes are not counted: docs/workspace.md), in one statement as the chats'.
_INSERT_MESSAGES_COUNTED = f"""
WITH inserted AS ({_INSERT_MESSAGES}),
counted AS (
    UPDATE conversations_chat AS chat SET messages_count = chat.messages_count + added.n
    FROM (SELECT chat_id, count(*) AS n FROM inserted WHERE NOT is_private GROUP BY chat_id) AS added
    WHERE chat.id = added.chat_id
)
SELECT chat_id, id, is_private FROM inserted
"""

_MISSING_CHATS = """
SELECT DISTINCT r.app, r.chat_number
FROM unnest(%s::bigint[], %s::integer[]) AS r(app, chat_number)
LEFT JOIN conversations_chat AS chat ON chat.application_id = r.app AND chat.number = r.chat_number
WHERE chat.id IS NULL
"""


# The chats a batch's messages go to, locked before the messages are inserted (whose foreign keys would lock
# them in whatever order the join yields): assigned and resolved chats first, waiting ones last. A batch may
# wait for a chat a resolve holds, and that resolve for an agent the assignment engine holds while it locks
# the waiting head of the queue: had the batch locked a waiting chat before it waited, the engine would wait
# for the batch, a cycle (conversations.lock_objects).
_LOCK_MESSAGE_CHATS = """
SELECT chat.id FROM conversations_chat AS chat
JOIN (SELECT DISTINCT app, chat_number FROM unnest(%s::bigint[], %s::integer[]) AS r(app, chat_number)) AS r
  ON chat.application_id = r.app AND chat.number = r.chat_number
ORDER BY chat.status = 'waiting', chat.id
FOR NO KEY UPDATE OF chat
"""


def _persist_batch(records: list[dict]) -> tuple[int, int]:
    """Inserts a batch in one transaction; rows already there (a drain that died before trimming the
    list) are skipped by the unique constraints and not counted twice. Returns (chats, messages) added."""
    chats = [record for record in records if record["kind"] == "chat"]
    messages = [record for record in records if record["kind"] == "message"]
    # The batch's tenant-work marks (assignment, recount, webhooks) are collected and written in one statement
    # as the transaction's last step (tenants.work.tenant_work_marks_batched): one round trip, not one each.
    # Pipelined (core.prepared): the client waits for PostgreSQL only where it reads rows (the two inserts' ids
    # together, the routing hook's arrivals) and once at the end, not after each of the batch's ~12 statements.
    with transaction.atomic(), pipelined(), prepared_cursor() as cursor, tenant_work_marks_batched():
        # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED; check them now, so a refused row fails
        # its own statement (and can be isolated) rather than the commit.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with prepared_cursor() as chats_cursor, prepared_cursor() as messages_cursor:
            # Both inserts are sent before either is read: one wait for both.
            if chats:
                chats_cursor.execute(
                    _INSERT_CHATS,
                    [
                        [r["app"] for r in chats],
                        [r["number"] for r in chats],
                        [r["customer_id"] for r in chats],
                        [r["at"] for r in chats],
                    ],
                )
            if messages:
                columns = [
                    [r["app"] for r in messages],
                    [r["chat"] for r in messages],
                    [r["number"] for r in messages],
                    [r["body"] for r in messages],
                    [r["sender"] for r in messages],
                    [r["author"] for r in messages],
                    [r["at"] for r in messages],
                    # Absent from records queued before private notes and attachments existed.
                    [r.get("private", False) for r in messages],
                    [json.dumps(r.get("attachments") or []) for r in messages],
                ]
                cursor.execute(_LOCK_MESSAGE_CHATS, columns[:2])
                messages_cursor.execute(_INSERT_MESSAGES_COUNTED, columns)
            inserted_chats = chats_cursor.fetchall() if chats else []
            inserted_messages = messages_cursor.fetchall() if messages else []
        chats_added = Counter(row[0] for row in inserted_chats)
        # `messages_count` counts what the customer sees: private notes are not in it (docs/workspace.md).
        messages_added = Counter(row[0] for row in inserted_messages if not row[2])
        if len(inserted_messages) < len(messages):
            # Only possible if Redis lost a chat's creation; never drop the messages silently.
            cursor.execute(_MISSING_CHATS, columns[:2])
            for app_id, chat_number in cursor.fetchall():
                logger.error("queued messages for chat %s of application %s, which does not exist", chat_number, app_id)
        report_creations_persisted(chat_ids=[row[1] for row in inserted_chats], message_ids=[row[1] for row in inserted_messages])
        routing_creations_persisted(chat_ids=[row[1] for row in inserted_chats], message_ids=[row[1] for row in inserted_messages])
        contacts_touch(chat_ids=[row[1] for row in inserted_chats], message_ids=[row[1] for row in inserted_messages])
        # The tenant's work marks last, after the chat rows this batch touched: the lock order
        # (conversations.lock_objects).
        if chats_added:
            assignment_schedule()  # new waiting chats: served once this batch commits
        if chats_added or messages_added:
            # The counts just changed: the periodic recount (the safety net for counts changed by hand) is
            # due for this tenant within COUNTS_RECONCILE_SECONDS; the earliest mark stands.
            tenant_work_mark(kind=TenantWork.Kind.COUNTS, due_at=timezone.now() + timedelta(seconds=settings.COUNTS_RECONCILE_SECONDS))
        events_record_creations(records=records)  # events (the outbox) last: their work mark after the others
    return sum(chats_added.values()), sum(messages_added.values())


def _persist_records(records: list[dict]) -> None:
    """A batch, or, if the batch is refused for its data, each record alone: a record PostgreSQL refuses
    (its application deleted meanwhile, say) is parked in the dead list with the error instead of
    blocking every creation queued behind it. Connection errors propagate: the task is retried."""
    if len(records) > 1:
        try:
            _persist_batch(records)
            return
        except (DataError, IntegrityError):
            logger.warning("a batch of %s creations was refused; persisting them one by one", len(records))
    for record in records:
        try:
            _persist_batch([record])
        except (DataError, IntegrityError) as error:
            logger.error("creation refused, parked in the dead list: %s", error)
            creations.dead_push(record=record, error=str(error))


def creations_persist(*, batch_size: int, linger_seconds: float = 0.0, max_seconds: float | None = None) -> int:
    """Drains the tenant's queued creations into PostgreSQL, FIFO, `batch_size` per transaction.

    One drain per tenant at a time (a Redis lease): records are read, committed, and only then trimmed
    from the list, so a drain that dies loses nothing and the next one re-inserts idempotently.

    While it runs, the drain keeps `creations:scheduled` set, so requests send no other drain task; it
    unsets it only in the same atomic step as it finds the list empty (creations.finish_if_empty). Under
    steady load one drain therefore persists batch after batch instead of a task being sent, received and
    run for every few records. `linger_seconds`: when a batch is not full, wait this long once for more
    records before persisting it (bigger batches, at the cost of rows appearing up to that much later).
    `max_seconds`: after that long, hand over to a new drain task (a task never runs for ever, and the
    tenant's other tasks get its concurrency slot between the two). Returns the number of records handled.

    The new waiting chats' assignment runs in this process (agents.services.assignment_runs_deferred), not
    as a task per batch: right after the first batch, then at most every CREATIONS_DRAIN_ASSIGN_EVERY_MS
    while batches keep coming, and once when the drain ends. So a burst is served by a few runs, and none
    of them waits in the queue behind other tenants' drains.
    """
    with assignment_runs_deferred() as assignments:
        return _creations_drain(batch_size=batch_size, linger_seconds=linger_seconds, max_seconds=max_seconds, assignments=assignments)


def _creations_drain(*, batch_size: int, linger_seconds: float, max_seconds: float | None, assignments) -> int:
    handled = 0
    started = time.monotonic()
    assign_every, last_run = settings.CREATIONS_DRAIN_ASSIGN_EVERY_MS / 1000, float("-inf")
    while True:
        taken = creations.drain_lock_acquire()
        if taken is None:
            # The drain holding the lock sees our records: it re-checks the list after releasing it (and
            # one whose worker died lets its lease and `scheduled` expire together, so requests schedule again).
            return handled
        # Redis round trips per batch: the lease step (take, or trim the last batch and renew), the read,
        # and at the end the step that finds the list empty and releases the lock.
        token, waiting = taken
        hand_over = released = False
        try:
            while True:
                if waiting < batch_size and linger_seconds > 0:
                    time.sleep(linger_seconds)
                records = creations.pending_peek(batch_size)
                if not records:
                    outcome = creations.finish_if_empty(token)
                    released = outcome == creations.FINISHED
                    if outcome == creations.RECORDS_WAITING and creations.lock_renew(token):
                        waiting = batch_size  # they came after our read: no need to linger for them
                        continue
                    break
                _persist_records(records)
                # The records are trimmed only while the lease is still ours: see creations.pending_remove.
                waiting = creations.pending_remove(count=len(records), token=token)
                if waiting is None:
                    logger.warning("drain lease ran out during a batch; the drain holding it now takes over")
                    return handled
                handled += len(records)
                if assignments.wanted and time.monotonic() - last_run >= assign_every:
                    assignments.run()  # this batch's chats, and any others committed since the last run
                    last_run = time.monotonic()
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    outcome = creations.finish_if_empty(token)
                    released = outcome == creations.FINISHED
                    hand_over = outcome == creations.RECORDS_WAITING
                    break
        finally:
            if not released:
                creations.lock_release(token)
        if hand_over:
            # `scheduled` stays set: the new task is the drain requests count on.
            _drain_schedule()
            return handled
        # Found empty with `scheduled` unset in the same step: whatever comes later schedules its own drain.
        if released or creations.pending_count() == 0:
            return handled


_RECONCILE_CHATS_COUNT = """
UPDATE conversations_application AS app SET chats_count = COALESCE(c.total, 0)
FROM conversations_application AS a
LEFT JOIN (SELECT application_id, count(*) AS total FROM conversations_chat GROUP BY application_id) AS c
       ON c.application_id = a.id
WHERE app.id = a.id AND app.chats_count <> COALESCE(c.total, 0)
"""

_RECONCILE_MESSAGES_COUNT = """
UPDATE conversations_chat AS chat SET messages_count = COALESCE(m.total, 0)
FROM conversations_chat AS c
LEFT JOIN (SELECT chat_id, count(*) AS total FROM conversations_message WHERE NOT is_private GROUP BY chat_id) AS m
       ON m.chat_id = c.id
WHERE chat.id = c.id AND chat.messages_count <> COALESCE(m.total, 0)
"""


def counts_reconcile() -> int | None:
    """Repairs `chats_count` / `messages_count` that drifted from the rows (e.g. rows deleted by hand).

    Holds the drain lock, so no batch commits between counting and writing. Returns the rows repaired
    (0 when nothing is wrong); None when a drain is running and nothing was checked (check again later).
    """
    token = creations.lock_acquire()
    if token is None:
        return None
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_RECONCILE_CHATS_COUNT)
            repaired = cursor.rowcount
            cursor.execute(_RECONCILE_MESSAGES_COUNT)
            repaired += cursor.rowcount
    finally:
        # A drain that found the lock held by this recount returned, trusting the holder to look again.
        if creations.lock_hand_back(token):
            _drain_schedule()
    if repaired:
        logger.warning("repaired %s drifted counts", repaired)
    return repaired
