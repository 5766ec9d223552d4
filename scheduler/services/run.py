"""Outbound messages and the tenant's periodic send job.

A run (`outbound_send_due`, sent by the dispatcher when the tenant's `outbound` mark in the due-work index
comes due: see "the job's schedule" below) recovers expired
claims, claims up to `batch_size` due messages in one UPDATE ... RETURNING over a SELECT ... FOR UPDATE
SKIP LOCKED, and then POSTs them in waves of parallel requests, outside any transaction. Every write after
the claim is conditional on the run's claim token, so a run that lost its claim (it stalled past the
lease) can neither send nor record anything for that message.
"""

import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from core.redis import redis_script_load
from core.text import storable_text
from core.transport import HttpTarget, http_body_start, http_post, http_send_and_collect, http_target
from events.services import OUTBOUND_FAILED, OUTBOUND_SENT, event_time, events_record
from scheduler.models import OutboundMessage, SchedulerSetting
from scheduler.services.schedule import _tenant_schema_name, outbound_cache_key, scheduler_ensure

logger = logging.getLogger(__name__)

ERROR_MAX_LENGTH = 1000
MESSAGE_ID_MAX_LENGTH = 255  # the column's


@dataclass
class OutboundRunSummary:
    skipped: str | None = None
    recovered: int = 0
    sent: list[uuid.UUID] = field(default_factory=list)
    retrying: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    status: str  # "sent", "retry" or "failed"
    message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None


def outbound_retry_delay(*, attempts: int, retry_after: float | None = None) -> float:
    """Seconds before a retry: exponential in the attempts made, capped, with jitter.

    Half of the delay is fixed and half random ("equal jitter"): messages that failed together (a provider
    outage) spread out instead of coming back in one burst, and no retry comes back at once. A Retry-After
    from the provider is honoured, within the cap.
    """
    cap = settings.OUTBOUND_RETRY_MAX_SECONDS
    delay = min(cap, settings.OUTBOUND_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    delay = delay / 2 + random.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def outbound_recover_expired(*, now: datetime) -> int:
    """Takes back messages whose run died mid-send (lease expired): due again, or failed when out of attempts.

    The receiver may have got the first request; it de-duplicates by the unchanged Idempotency-Key.
    """
    expired = OutboundMessage.objects.filter(status=OutboundMessage.Status.SENDING, lease_expires_at__lt=now)
    with transaction.atomic():  # the failures and their outbound.failed events together
        given_up = list(
            expired.filter(attempts__gte=settings.OUTBOUND_MAX_ATTEMPTS).select_for_update(skip_locked=True).values_list("id", flat=True)
        )
        exhausted = OutboundMessage.objects.filter(id__in=given_up, status=OutboundMessage.Status.SENDING).update(
            status=OutboundMessage.Status.FAILED,
            claim_token=None,
            lease_expires_at=None,
            last_error="Delivery outcome unknown: the sending run stopped before recording it, and no attempts are left.",
            updated_at=now,
        )
        _outbound_events_record(messages=list(OutboundMessage.objects.filter(id__in=given_up, status=OutboundMessage.Status.FAILED)))
    retried = expired.update(
        status=OutboundMessage.Status.PENDING,
        claim_token=None,
        lease_expires_at=None,
        next_attempt_at=now,
        updated_at=now,
    )
    if exhausted or retried:
        logger.warning("outbound: recovered %d expired claims (%d failed)", exhausted + retried, exhausted)
    return exhausted + retried


# One statement claims the batch: the CTE locks the due rows it picks (SKIP LOCKED: a concurrent run passes
# over them instead of waiting and then claiming them again), the UPDATE marks them ours and counts the
# attempt each is about to get, and RETURNING hands them back: one round trip and one commit for the batch.
_CLAIM = """
WITH due AS (
    SELECT id FROM scheduler_outboundmessage
    WHERE status = 'pending' AND next_attempt_at <= %(now)s
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE scheduler_outboundmessage AS message
SET status = 'sending', claim_token = %(claim_token)s, lease_expires_at = %(lease_expires_at)s,
    attempts = message.attempts + 1, updated_at = %(now)s
FROM due WHERE message.id = due.id
RETURNING {columns}
"""

# A run still sending renews the leases of everything it holds.
_CLAIM_RENEW = """
UPDATE scheduler_outboundmessage SET lease_expires_at = %(lease_expires_at)s
WHERE status = 'sending' AND claim_token = %(claim_token)s
"""

# Outcomes, one row each, written together where the claim is still ours. The run's token is compared through
# the outcome rows, not as `message.claim_token = <token>`: PostgreSQL expects one row for a given token (nearly
# every row has none), and with that estimate compared each row it found with every outcome (a nested loop: the
# run's claimed rows x the outcomes; the same statement in events.delivery spent 108 of its 126 ms there).
# Compared through the join, each outcome finds its message by primary key; so is the status ('sending'), which
# as a constant the planner read from an index it expects to hold one row, then joined the outcomes to it.
_OUTCOMES_RECORD = """
WITH outcome AS MATERIALIZED (
    SELECT outcome.*, %(claim_token)s::uuid AS claim_token, 'sending'::varchar AS claimed_status
    FROM unnest(%(ids)s::uuid[], %(statuses)s::varchar[], %(provider_ids)s::varchar[],
                %(next_attempts_at)s::timestamptz[], %(errors)s::text[])
         AS outcome(id, status, provider_id, next_attempt_at, error)
)
UPDATE scheduler_outboundmessage AS message
SET status = outcome.status,
    message_id = CASE WHEN outcome.status = 'sent' THEN outcome.provider_id ELSE message.message_id END,
    sent_at = CASE WHEN outcome.status = 'sent' THEN %(now)s ELSE message.sent_at END,
    next_attempt_at = coalesce(outcome.next_attempt_at, message.next_attempt_at),
    last_error = outcome.error,
    claim_token = NULL, lease_expires_at = NULL, updated_at = %(now)s
FROM outcome
WHERE message.id = outcome.id AND message.status = outcome.claimed_status AND message.claim_token = outcome.claim_token
RETURNING {columns}
"""

# Messages claimed but never tried (the run was interrupted): due again at once, the attempt counted by the
# claim taken back.
_UNTRIED_RELEASE = """
UPDATE scheduler_outboundmessage
SET status = 'pending', claim_token = NULL, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE id = ANY(%(ids)s) AND status = 'sending' AND claim_token = %(claim_token)s
"""


def _lease_expires_at() -> datetime:
    return timezone.now() + timedelta(seconds=settings.OUTBOUND_LEASE_SECONDS)


def outbound_claim_due(*, batch_size: int, claim_token: uuid.UUID, now: datetime) -> list[OutboundMessage]:
    """Claims up to `batch_size` due pending messages, oldest first, for one run (one statement), and counts
    the attempt each is about to get (a run hands back what it did not try, attempt and all).

    SKIP LOCKED: a concurrent run skips the rows this one is claiming instead of waiting for them and then
    claiming them again; once committed they are `sending` and out of every other run's query.
    """
    fields = OutboundMessage._meta.concrete_fields
    columns = ", ".join(f"message.{connection.ops.quote_name(field.column)}" for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM.format(columns=columns),
            {
                "now": now,
                "limit": batch_size,
                "claim_token": claim_token,
                "lease_expires_at": now + timedelta(seconds=settings.OUTBOUND_LEASE_SECONDS),
            },
        )
        rows = cursor.fetchall()
    names = [field.attname for field in fields]
    # psycopg already returns these columns as a queryset would (UUIDs, aware datetimes).
    messages = [OutboundMessage.from_db(connection.alias, names, row) for row in rows]
    messages.sort(key=lambda message: (message.created_at, message.id))
    return messages


def _post(*, target: HttpTarget, setting: SchedulerSetting, message: OutboundMessage) -> _Outcome:
    """One message's request on the run's pool, and what its answer means for the message."""
    body = json.dumps({"to": message.to, "content": message.content}).encode()
    result = http_post(
        target=target, body=body, headers={"x-ins-auth-key": setting.auth_key, "Idempotency-Key": str(message.id)}
    )
    if result.status is None:
        return _Outcome("retry" if result.transient else "failed", error=result.error)
    status, data = result.status, result.data
    if 200 <= status < 300:
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the decoder's recursion
            payload = None
        provider_id = payload.get("messageId") if isinstance(payload, dict) else None
        if provider_id in (None, "") or isinstance(provider_id, (dict, list, bool)):
            # Accepted, maybe delivered, but unrecorded: never resend it on our own (an operator may retry).
            return _Outcome("failed", error=f"HTTP {status} without a messageId in a JSON body: {http_body_start(data)}")
        return _Outcome("sent", message_id=str(provider_id))
    if status == 429 or status >= 500:
        return _Outcome("retry", error=f"HTTP {status}: {http_body_start(data)}", retry_after=result.retry_after)
    return _Outcome("failed", error=f"HTTP {status}: {http_body_start(data)}")


def _outcome_row(*, outcome: _Outcome, attempts: int, now: datetime) -> tuple[str, str | None, datetime | None, str | None]:
    """(status, provider id, next attempt at, last error) to write for one outcome.

    The provider id and the error come from the provider's answer (or an exception quoting it): data, which
    may hold what PostgreSQL refuses (NUL) or cannot encode (a lone surrogate from `"\\ud800"`). They are
    cleaned and bounded here, the one place every outcome passes, so one odd answer cannot fail the statement
    that records its whole wave.
    """
    if outcome.status == "sent":
        return OutboundMessage.Status.SENT, storable_text(outcome.message_id, max_length=MESSAGE_ID_MAX_LENGTH), None, None
    if outcome.status == "retry" and attempts < settings.OUTBOUND_MAX_ATTEMPTS:
        delay = outbound_retry_delay(attempts=attempts, retry_after=outcome.retry_after)
        error = storable_text(outcome.error, max_length=ERROR_MAX_LENGTH)
        return OutboundMessage.Status.PENDING, None, now + timedelta(seconds=delay), error
    error = outcome.error if outcome.status == "failed" else f"{outcome.error} (gave up after {attempts} attempts)"
    return OutboundMessage.Status.FAILED, None, None, storable_text(error, max_length=ERROR_MAX_LENGTH)


# What a row holds when even its cleaned outcome was refused (a defect of ours, never expected): the status is
# still recorded, so the message leaves `sending` and is not POSTed again when its lease ends.
_UNRECORDABLE_MESSAGE_ID = "(unrecordable)"
_UNRECORDABLE_ERROR = "The delivery outcome could not be stored; see the worker log."


def _outcome_rows_write(*, claim_token: uuid.UUID, rows: dict, now: datetime) -> set[uuid.UUID]:
    """One UPDATE for the rows, and the events of the final ones (outbound.sent / outbound.failed) in the same
    transaction; the ids written (those whose claim is still ours)."""
    # A transaction (a savepoint inside a caller's): an outcome and its event commit together, and a refused
    # statement (the outcome's or its event's) breaks neither the caller's transaction nor the other rows.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _OUTCOMES_RECORD.format(columns=_EVENT_COLUMNS),
            {
                "now": now,
                "claim_token": claim_token,
                "ids": list(rows),
                "statuses": [row[0] for row in rows.values()],
                "provider_ids": [row[1] for row in rows.values()],
                "next_attempts_at": [row[2] for row in rows.values()],
                "errors": [row[3] for row in rows.values()],
            },
        )
        written = [OutboundMessage.from_db(connection.alias, _EVENT_FIELDS, row) for row in cursor.fetchall()]
        _outbound_events_record(messages=written)
        return {message.id for message in written}


# What an outbound event carries: the outbound message as the API lists it.
_EVENT_FIELDS = ["id", "to", "content", "status", "attempts", "message_id", "sent_at", "last_error", "created_at"]
_EVENT_COLUMNS = ", ".join(f'message."{name}"' for name in _EVENT_FIELDS)


def _outbound_events_record(*, messages: list[OutboundMessage]) -> None:
    """outbound.sent / outbound.failed for the messages that reached a final status, in the caller's transaction."""
    final = {OutboundMessage.Status.SENT: OUTBOUND_SENT, OutboundMessage.Status.FAILED: OUTBOUND_FAILED}
    events_record(events=[
        (final[message.status], {
            "id": str(message.id), "to": message.to, "content": message.content, "status": message.status,
            "attempts": message.attempts, "message_id": message.message_id, "sent_at": event_time(message.sent_at),
            "last_error": message.last_error, "created_at": event_time(message.created_at),
        }, None, None, False)
        for message in messages if message.status in final
    ])  # fmt: skip


def _outcomes_record(
    *, claim_token: uuid.UUID, results: list[tuple[OutboundMessage, _Outcome, int]], now: datetime
) -> dict[uuid.UUID, tuple[str, str | None]]:
    """Writes outcomes (message, outcome, attempts made) in one statement, only for the messages whose claim
    is still ours. Returns {message id: (status written, provider messageId)}; the caller caches the sent."""
    if not results:
        return {}
    rows = {message.id: _outcome_row(outcome=outcome, attempts=attempts, now=now) for message, outcome, attempts in results}
    try:
        written = _outcome_rows_write(claim_token=claim_token, rows=rows, now=now)
    except (DatabaseError, UnicodeError):
        # Never expected after the cleaning above. Recording must still not fail the wave: a row left `sending`
        # would be POSTed again when its lease ends. Each row alone, then a refused one with its status only.
        # (A database that is down fails these too, and the error goes up as before.)
        logger.exception("outbound: recording %d outcomes together failed; recording them one by one", len(rows))
        written = set()
        for message_id, row in rows.items():
            try:
                written |= _outcome_rows_write(claim_token=claim_token, rows={message_id: row}, now=now)
            except (DatabaseError, UnicodeError):
                logger.exception("outbound %s: its outcome (%s) was refused; recording the status alone", message_id, row[0])
                status, provider_id, next_attempt_at, _ = row
                bare = (status, _UNRECORDABLE_MESSAGE_ID if provider_id is not None else None, next_attempt_at, _UNRECORDABLE_ERROR)
                written |= _outcome_rows_write(claim_token=claim_token, rows={message_id: bare}, now=now)
                rows[message_id] = bare
    for message_id, (status, _, _, _) in rows.items():
        if message_id not in written:
            logger.warning("outbound %s: claim lost before its outcome (%s) was recorded", message_id, status)
    return {message_id: rows[message_id][:2] for message_id in written}


# A wave's cache entries in one command, whatever its size. A pipeline of SETs is one round trip too, but the
# run's thread packs a command and parses a reply per message: about four times the CPU of this script, on
# the thread the sending threads share a GIL with. (All keys in one script: a single Redis, not a Cluster.)
_CACHE_SET_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "cache_set_many.lua"


def _cache_sent(*, sent: dict[uuid.UUID, str], sent_at: datetime) -> None:
    # The row is the record; the cache is a convenience for readers, so a Redis outage only logs.
    if not sent:
        return
    schema_name = _tenant_schema_name()
    sent_at_text = sent_at.isoformat()
    try:
        redis_script_load(_CACHE_SET_SCRIPT)(
            keys=[outbound_cache_key(schema_name=schema_name, message_id=message_id) for message_id in sent],
            args=[
                settings.OUTBOUND_CACHE_TTL_SECONDS,
                *(json.dumps({"messageId": provider_id, "sent_at": sent_at_text}) for provider_id in sent.values()),
            ],
        )
    except Exception:
        logger.warning("outbound: %d sent, but caching their messageId in Redis failed", len(sent), exc_info=True)


def _claim_renew(*, claim_token: uuid.UUID) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_RENEW, {"claim_token": claim_token, "lease_expires_at": _lease_expires_at()})


def outbound_send_due(*, now: datetime | None = None) -> OutboundRunSummary:
    """One run of the tenant's job: recover expired claims, claim up to batch_size due messages, send them.

    Safe to run concurrently with itself (two workers, an overlapping slow run): claims never overlap.
    Up to `OUTBOUND_SEND_CONCURRENCY` requests are in flight at once, on threads that only do HTTP. This
    thread records the answers as they come: each write is one statement (one commit) for every answer
    that arrived while the previous one committed, then one Redis script for the sent ones. Messages
    claimed but not yet tried when the run is interrupted are released at once.
    """
    now = now or timezone.now()
    summary = OutboundRunSummary()
    prepared = _run_prepare(summary=summary, now=now)
    if prepared is None:
        return summary
    setting, target, claim_token, claimed = prepared
    try:
        written = _run_send_and_collect(setting=setting, target=target, claim_token=claim_token, claimed=claimed)
    finally:
        target.manager.clear()
    by_status = {
        OutboundMessage.Status.SENT: summary.sent,
        OutboundMessage.Status.PENDING: summary.retrying,
        OutboundMessage.Status.FAILED: summary.failed,
    }
    for message in claimed:  # in claim order, oldest first
        if message.id in written:
            by_status[written[message.id]].append(message.id)
    if summary.sent or summary.retrying or summary.failed:
        logger.info(
            "outbound run: %d sent, %d to retry, %d failed", len(summary.sent), len(summary.retrying), len(summary.failed)
        )
    return summary


def _run_prepare(
    *, summary: OutboundRunSummary, now: datetime
) -> tuple[SchedulerSetting, HttpTarget, uuid.UUID, list[OutboundMessage]] | None:
    """The run's first step: the job must be running and configured; expired claims come back; the batch is
    claimed. None (with `summary.skipped` saying why, or nothing due): nothing to send."""
    setting = SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).first()
    if setting is None:
        setting = scheduler_ensure()
    if not setting.running:
        summary.skipped = "stopped"
        return None
    SchedulerSetting.objects.filter(id=setting.id).update(last_run_at=now)
    summary.recovered = outbound_recover_expired(now=now)
    if not setting.webhook_url:
        logger.warning("outbound: no webhook_url configured; pending messages wait")
        summary.skipped = "no webhook_url"
        return None
    concurrency = max(1, min(settings.OUTBOUND_SEND_CONCURRENCY, setting.batch_size))
    # Before the claim: a pool that cannot be made (an unusable proxy setting) leaves every message pending.
    target = http_target(concurrency=concurrency, url=setting.webhook_url, user_agent="sociomile-outbound")
    claim_token = uuid.uuid4()
    claimed = outbound_claim_due(batch_size=setting.batch_size, claim_token=claim_token, now=now)
    if not claimed:
        target.manager.clear()
        return None
    return setting, target, claim_token, claimed


def _run_send_and_collect(
    *, setting: SchedulerSetting, target: HttpTarget, claim_token: uuid.UUID, claimed: list[OutboundMessage]
) -> dict[uuid.UUID, str]:
    """Sends the claimed messages in parallel and records their outcomes as they come (batched writes, the
    sent ones cached); what never started is released. Returns {message id: status written}."""
    written: dict[uuid.UUID, str] = {}
    schema_name = _tenant_schema_name()

    def send(message: OutboundMessage) -> tuple[_Outcome, int]:
        # The thread's own (never opened) connection names the tenant too: log lines from here carry it.
        with schema_context(schema_name):
            try:
                outcome = _post(target=target, setting=setting, message=message)
            except Exception as error:  # a bug here must not leave the run waiting for an answer forever
                logger.exception("outbound %s: sending failed unexpectedly", message.id)
                outcome = _Outcome("retry", error=f"{error.__class__.__name__}: {error}")
        return outcome, message.attempts

    def record(results: list) -> None:
        recorded_at = timezone.now()
        recorded = _outcomes_record(
            claim_token=claim_token,
            results=[(message, outcome, attempts) for message, (outcome, attempts) in results],
            now=recorded_at,
        )
        written.update({message_id: status for message_id, (status, _) in recorded.items()})
        _cache_sent(
            sent={message_id: provider_id for message_id, (status, provider_id) in recorded.items() if status == "sent"},
            sent_at=recorded_at,
        )

    http_send_and_collect(
        items=claimed,  # oldest first; the pool starts them in this order
        send=send,
        record=record,
        # The claim's leases are renewed while the run goes on, so they only have to outlast one request and
        # this interval, however long the batch takes.
        renew=lambda: _claim_renew(claim_token=claim_token),
        renew_every=settings.OUTBOUND_LEASE_SECONDS / 4,
        release=lambda untried: _run_release(claim_token=claim_token, untried=untried),
        concurrency=max(1, min(settings.OUTBOUND_SEND_CONCURRENCY, setting.batch_size)),
        thread_name_prefix=f"outbound-{schema_name}",
    )
    return written


def _run_release(*, claim_token: uuid.UUID, untried: list[OutboundMessage]) -> None:
    """Hands back the messages an interrupted run never tried: due again at once."""
    with connection.cursor() as cursor:
        cursor.execute(_UNTRIED_RELEASE, {"ids": [message.id for message in untried], "claim_token": claim_token})
