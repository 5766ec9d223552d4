"""The delivery engine: a tenant's run claims due deliveries, POSTs them signed (Standard Webhooks) through
the shared transport (core.transport), and records the outcomes in batches.

A run is a pipeline (core.transport.http_send_pipeline), not rounds: it claims more due deliveries while the
slowest requests of the previous claim are still in flight, so no thread idles waiting for a round's last
answer. A claim is one UPDATE over a SELECT ... FOR UPDATE SKIP LOCKED that takes, per active endpoint, at
most what keeps that endpoint's window (EVENTS_ENDPOINT_WINDOW claimed and unanswered) full, and one endpoint
never has more than EVENTS_ENDPOINT_CONCURRENCY requests in flight: a slow or timing-out endpoint holds its
own window and threads, never the others'. A claim sets the run's token and a lease and counts the attempt,
and leaves the status as it is, so an unfinished earlier delivery of a chat keeps holding back the later ones
(the order rule) while it is in flight. Every write after the claim is conditional on the token: a run that
lost its claim (it stalled past the lease) records nothing for that delivery. A run killed mid-send loses
nothing: the lease runs out and the delivery is due again, with the same `webhook-id`. At
EVENTS_RUN_MAX_SECONDS the run stops claiming and starting, hands back what it had not started and awaits
what is in flight (one request's timeout at most), far below the task's time limit.
"""

import contextlib
import json
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context
from standardwebhooks import Webhook

from core.text import storable_text
from core.transport import HttpResult, HttpTarget, http_body_start, http_post, http_send_pipeline, http_target
from events.models import Delivery, Event, WebhookEndpoint
from events.envelope import event_time, webhook_envelope
from tenants.models import TenantWork
from tenants.work import tenant_work_settle, tenant_work_version

logger = logging.getLogger(__name__)

ERROR_MAX_LENGTH = 1000

# The order rule, shared by the claim and the next-due query: no unfinished delivery of an earlier event of
# the same chat to the same endpoint (chat_id NULL: an event of no chat, never held back). OFFSET 0 keeps it a
# subplan probed per row on the (endpoint, chat, event) index: flattened into an anti join, a plan made on
# stale statistics (a burst of new deliveries) matched on the endpoint alone and filtered every delivery of
# the endpoint for each candidate (seconds per claim at a few thousand due).
_NO_EARLIER_UNFINISHED = """
(delivery.chat_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM events_delivery AS earlier
    WHERE earlier.endpoint_id = delivery.endpoint_id AND earlier.chat_id = delivery.chat_id
      AND earlier.event_id < delivery.event_id AND (earlier.status = 'pending' OR earlier.status = 'failed')
    OFFSET 0
))
"""

# Per active endpoint (LATERAL), its oldest due deliveries that head their chat's line, as many as its window
# has room for (`busy`: what this run holds of it, claimed and unanswered), then the oldest of those overall.
_CLAIM = f"""
WITH due AS (
    SELECT picked.id, picked.event_id
    FROM events_webhookendpoint AS endpoint
    LEFT JOIN unnest(%(busy_ids)s::uuid[], %(busy_counts)s::integer[]) AS busy(endpoint_id, unanswered)
      ON busy.endpoint_id = endpoint.id
    CROSS JOIN LATERAL (
        SELECT delivery.id, delivery.event_id FROM events_delivery AS delivery
        WHERE delivery.endpoint_id = endpoint.id
          AND (delivery.status = 'pending' OR delivery.status = 'failed') AND delivery.next_attempt_at <= %(now)s
          AND (delivery.lease_expires_at IS NULL OR delivery.lease_expires_at < %(now)s)
          AND {_NO_EARLIER_UNFINISHED}
        -- endpoint_id first, though fixed here: only the (endpoint, event) index gives this order, so the plan
        -- walks it and stops at the window, instead of an index of every delivery in event order, finished
        -- ones included, filtered by endpoint
        ORDER BY delivery.endpoint_id, delivery.event_id
        LIMIT greatest(%(window)s - coalesce(busy.unanswered, 0), 0)
        FOR UPDATE OF delivery SKIP LOCKED
    ) AS picked
    WHERE endpoint.is_active
    ORDER BY picked.event_id
    LIMIT %(limit)s
)
UPDATE events_delivery AS delivery
SET claim_token = %(claim_token)s, lease_expires_at = %(lease_expires_at)s, attempts = delivery.attempts + 1
FROM due WHERE delivery.id = due.id
RETURNING delivery.id, delivery.endpoint_id, delivery.attempts, delivery.event_id
"""

# By primary key, apart from the claim: joined in the claim's UPDATE, the plan hashed the whole event table.
_CLAIMED_EVENTS = """
SELECT id, public_id, type, created_at, data FROM events_event WHERE id = ANY(%(ids)s)
"""

# When the tenant's next run is due: the earliest moment a delivery at the head of its chat's line (the only
# ones a run may send) can go: its next attempt, or its lease running out.
_NEXT_DUE = f"""
SELECT min(greatest(delivery.next_attempt_at, coalesce(delivery.lease_expires_at, delivery.next_attempt_at)))
FROM events_delivery AS delivery
JOIN events_webhookendpoint AS endpoint ON endpoint.id = delivery.endpoint_id AND endpoint.is_active
WHERE (delivery.status = 'pending' OR delivery.status = 'failed') AND {_NO_EARLIER_UNFINISHED}
"""

# By the ids the run holds: no index has the token (one would cost every claim and outcome a write), so a
# token alone is a scan of every delivery of the retention period.
_RENEW = """
UPDATE events_delivery SET lease_expires_at = %(lease_expires_at)s
WHERE id = ANY(%(ids)s) AND claim_token = %(claim_token)s
"""

# Claimed but never tried (the run was interrupted): due again at once, the attempt counted by the claim
# taken back.
_RELEASE = """
UPDATE events_delivery SET claim_token = NULL, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE id = ANY(%(ids)s) AND claim_token = %(claim_token)s
"""

# A round's outcomes in one statement: the deliveries still claimed by this run, and every attempt (it
# happened, whoever holds the claim now) of a delivery that still exists. The run's token is compared through
# the outcome rows, not as `delivery.claim_token = <token>`: PostgreSQL estimates one row for a given token (nearly
# every row has none), so it scanned the whole table for the token and compared each row it found with every
# outcome (a nested loop: the run's claimed rows x the outcomes, most of a run's database time). Compared through
# the join, each outcome finds its row by primary key (or one hash join on a small table).
_OUTCOMES_RECORD = """
WITH outcome AS MATERIALIZED (
    SELECT outcome.*, %(claim_token)s::uuid AS claim_token
    FROM unnest(%(ids)s::uuid[], %(statuses)s::text[], %(codes)s::integer[], %(errors)s::text[],
                %(next_attempts_at)s::timestamptz[], %(attempted_at)s::timestamptz[], %(durations)s::integer[])
        AS outcome(id, status, code, error, next_attempt_at, attempted_at, duration_ms)
),
updated AS (
    UPDATE events_delivery AS delivery
    SET status = outcome.status, last_status_code = outcome.code, last_error = outcome.error,
        next_attempt_at = coalesce(outcome.next_attempt_at, delivery.next_attempt_at),
        delivered_at = CASE WHEN outcome.status = 'succeeded' THEN outcome.attempted_at ELSE delivery.delivered_at END,
        claim_token = NULL, lease_expires_at = NULL
    FROM outcome WHERE delivery.id = outcome.id AND delivery.claim_token = outcome.claim_token
    RETURNING delivery.id
),
attempts AS (
    INSERT INTO events_deliveryattempt (delivery_id, attempted_at, status_code, error, duration_ms)
    SELECT outcome.id, outcome.attempted_at, outcome.code, outcome.error, outcome.duration_ms
    FROM outcome JOIN events_delivery AS delivery ON delivery.id = outcome.id
)
SELECT id FROM updated
"""

# Each endpoint's health after a round: any success clears its failure record; only failures start it (at
# the round's first failure) or keep it.
_ENDPOINT_HEALTH = """
UPDATE events_webhookendpoint AS endpoint
SET failing_since = CASE WHEN health.succeeded THEN NULL ELSE coalesce(endpoint.failing_since, health.failed_at) END
FROM unnest(%(ids)s::uuid[], %(succeeded)s::boolean[], %(failed_at)s::timestamptz[]) AS health(id, succeeded, failed_at)
WHERE endpoint.id = health.id
"""

_DEACTIVATE = """
UPDATE events_webhookendpoint SET is_active = false, deactivated_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND is_active AND failing_since <= %(failing_before)s
RETURNING id, url
"""


@dataclass
class DeliveryRunSummary:
    claimed: int = 0
    released: int = 0  # claimed, never started (the run's time was up): due again at once
    succeeded: int = 0
    retrying: int = 0
    dead: int = 0
    deactivated: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class _Claimed:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    attempts: int
    webhook_id: str
    body: bytes


@dataclass(frozen=True)
class _Sent:
    result: HttpResult
    attempted_at: datetime
    duration_ms: int


def webhook_retry_delay(*, attempts: int) -> float | None:
    """Seconds before the next attempt after `attempts` failed ones, with jitter (0.8x to 1.2x: deliveries that
    failed together, an endpoint's outage, come back spread out); None: no attempts left, the delivery is dead."""
    schedule = settings.EVENTS_RETRY_SCHEDULE_SECONDS
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * random.uniform(0.8, 1.2)


def webhook_signature(*, endpoint: WebhookEndpoint, webhook_id: str, timestamp: datetime, body: str, now: datetime) -> str:
    """The `webhook-signature` header: `v1,<sig>` with the secret, and a second one with the previous secret
    while its rotation overlap lasts."""
    signatures = [Webhook(endpoint.secret).sign(webhook_id, timestamp, body)]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        signatures.append(Webhook(endpoint.previous_secret).sign(webhook_id, timestamp, body))
    return " ".join(signatures)


def webhook_deliveries_claim(
    *, claim_token: uuid.UUID, now: datetime, limit: int, busy: dict[uuid.UUID, int] | None = None
) -> list[_Claimed]:
    """Claims up to `limit` due deliveries that head their chat's line, oldest event first, at most
    EVENTS_ENDPOINT_WINDOW minus `busy[endpoint]` (what the run already holds) per endpoint (one statement)."""
    busy = busy or {}
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM,
            {
                "now": now,
                "limit": limit,
                "window": settings.EVENTS_ENDPOINT_WINDOW,
                "busy_ids": list(busy),
                "busy_counts": list(busy.values()),
                "claim_token": claim_token,
                "lease_expires_at": now + timedelta(seconds=settings.EVENTS_LEASE_SECONDS),
            },
        )
        rows = sorted(cursor.fetchall(), key=lambda row: row[3])
        if not rows:
            return []
        cursor.execute(_CLAIMED_EVENTS, {"ids": list({row[3] for row in rows})})
        # Django has psycopg hand jsonb over as text (JSONField parses it): so does this raw query.
        events = {
            event_id: Event(id=event_id, public_id=public_id, type=type, created_at=created_at, data=json.loads(data))
            for event_id, public_id, type, created_at, data in cursor.fetchall()
        }
    return [
        _Claimed(id=delivery_id, endpoint_id=endpoint_id, attempts=attempts, webhook_id=events[event_id].webhook_id,
                 body=webhook_envelope(events[event_id]))
        for delivery_id, endpoint_id, attempts, event_id in rows
    ]  # fmt: skip


def webhook_deliveries_send(*, max_seconds: float | None = None) -> DeliveryRunSummary:
    """One delivery run of the tenant: claims, sends and records (a pipeline, see the module's docstring) until
    nothing is due or EVENTS_RUN_MAX_SECONDS (`max_seconds`) is up.

    Safe to run concurrently with itself (claims never overlap; the order rule holds across runs, since an
    in-flight delivery stays unfinished until its outcome is written)."""
    summary = DeliveryRunSummary()
    max_seconds = settings.EVENTS_RUN_MAX_SECONDS if max_seconds is None else max_seconds
    claim_token = uuid.uuid4()  # one per run: renewing and releasing cover every claim of the run
    schema_name = connection.schema_name
    endpoints: dict[uuid.UUID, WebhookEndpoint] = {}
    # One keep-alive pool per endpoint URL for the whole run.
    targets: dict[str, HttpTarget] = {}
    holding: set[uuid.UUID] = set()  # claimed by the run, neither recorded nor handed back: the leases to renew
    window = settings.EVENTS_ENDPOINT_WINDOW
    last_query = [0.0]
    endpoints_read_at = [0.0]

    def claim(held: Counter) -> list[_Claimed]:
        # Worth a query when an endpoint the run holds has a quarter of its window free, nothing is held at all,
        # or a second passed (an endpoint the run does not hold yet may have deliveries due). Early, not when the
        # window is nearly empty: the threads go on through what waits while this thread claims.
        if held and all(window - count < window / 4 for count in held.values()):
            if time.monotonic() - last_query[0] < 1.0:
                return []
        limit = settings.EVENTS_DELIVERY_BATCH - sum(held.values())
        if limit <= 0:
            return []
        last_query[0] = time.monotonic()
        claimed = webhook_deliveries_claim(
            claim_token=claim_token, now=timezone.now(), busy=dict(held), limit=limit
        )
        if not claimed:
            return []
        summary.claimed += len(claimed)
        holding.update(delivery.id for delivery in claimed)
        # Read when new to the run, and again every few seconds: a rotated secret or a changed URL is used from
        # then on (the previous secret signs too for a day after a rotation).
        endpoint_ids = {delivery.endpoint_id for delivery in claimed}
        if not endpoint_ids <= endpoints.keys() or time.monotonic() - endpoints_read_at[0] > 5:
            endpoints.update((endpoint.id, endpoint) for endpoint in WebhookEndpoint.objects.filter(id__in=endpoint_ids))
            endpoints_read_at[0] = time.monotonic()
        for delivery in claimed:
            url = endpoints[delivery.endpoint_id].url
            if url not in targets:
                targets[url] = http_target(
                    concurrency=settings.EVENTS_ENDPOINT_CONCURRENCY, url=url, user_agent="sociomile-webhooks",
                    timeout_seconds=settings.EVENTS_HTTP_TIMEOUT_SECONDS,
                )  # fmt: skip
        return claimed

    def send(delivery: _Claimed) -> _Sent:
        with schema_context(schema_name):  # log lines from the sending threads name the tenant
            started = time.monotonic()
            attempted_at = timezone.now()
            try:
                endpoint = endpoints[delivery.endpoint_id]
                headers = {
                    "webhook-id": delivery.webhook_id,
                    "webhook-timestamp": str(int(attempted_at.timestamp())),
                    "webhook-signature": webhook_signature(
                        endpoint=endpoint, webhook_id=delivery.webhook_id, timestamp=attempted_at,
                        body=delivery.body.decode(), now=attempted_at,
                    ),
                }  # fmt: skip
                result = http_post(target=targets[endpoint.url], body=delivery.body, headers=headers)
            except Exception as error:  # a bug here must not leave the run waiting for an answer forever
                logger.exception("webhook delivery %s: sending failed unexpectedly", delivery.id)
                result = HttpResult(error=f"{error.__class__.__name__}: {error}", transient=True)
            return _Sent(result=result, attempted_at=attempted_at, duration_ms=int((time.monotonic() - started) * 1000))

    def record(results: list[tuple[_Claimed, _Sent]]) -> None:
        _outcomes_record(claim_token=claim_token, results=results, summary=summary, endpoints=endpoints)
        holding.difference_update(delivery.id for delivery, _ in results)

    def release(untried: list[_Claimed]) -> None:
        _release(claim_token=claim_token, untried=untried, summary=summary)
        holding.difference_update(delivery.id for delivery in untried)

    try:
        http_send_pipeline(
            claim=claim,
            key=lambda delivery: delivery.endpoint_id,
            send=send,
            record=record,
            renew=lambda: _renew(claim_token=claim_token, ids=list(holding)),
            renew_every=settings.EVENTS_LEASE_SECONDS / 4,
            release=release,
            concurrency=settings.EVENTS_SEND_CONCURRENCY,
            key_concurrency=settings.EVENTS_ENDPOINT_CONCURRENCY,
            thread_name_prefix=f"webhooks-{schema_name}",
            deadline=time.monotonic() + max_seconds,
        )
    finally:
        for target in targets.values():
            target.manager.clear()
    if summary.claimed:
        logger.info(
            "webhook deliveries: %d succeeded, %d to retry, %d dead, %d handed back",
            summary.succeeded, summary.retrying, summary.dead, summary.released,
        )  # fmt: skip
    return summary


def _outcome_row(*, delivery: _Claimed, sent: _Sent, now: datetime) -> tuple[str, int | None, str | None, datetime | None]:
    """(status, status code, error, next attempt at) for one answer."""
    result = sent.result
    if result.status is not None and 200 <= result.status < 300:
        return Delivery.Status.SUCCEEDED, result.status, None, None
    if result.status is not None:
        error = f"HTTP {result.status}: {http_body_start(result.data)}"
    else:
        error = result.error or "unknown error"
    error = storable_text(error, max_length=ERROR_MAX_LENGTH)
    if result.status is None and not result.transient:
        return Delivery.Status.DEAD, None, error, None  # a refused URL (SSRF) and the like: retrying cannot help
    delay = webhook_retry_delay(attempts=delivery.attempts)
    if delay is None:
        return Delivery.Status.DEAD, result.status, f"{error} (gave up after {delivery.attempts} attempts)", None
    return Delivery.Status.FAILED, result.status, error, now + timedelta(seconds=delay)


def _outcomes_record(
    *, claim_token: uuid.UUID, results: list[tuple[_Claimed, _Sent]], summary: DeliveryRunSummary,
    endpoints: dict[uuid.UUID, WebhookEndpoint],
) -> None:  # fmt: skip
    """Writes a batch of outcomes, their attempts and their endpoints' health in one transaction. `endpoints`
    as the round read them: a healthy endpoint that stays healthy costs no write."""
    now = timezone.now()
    rows = {delivery.id: (delivery, sent, _outcome_row(delivery=delivery, sent=sent, now=now)) for delivery, sent in results}
    health: dict[uuid.UUID, tuple[bool, datetime | None]] = {}
    for delivery, sent, (status, _, _, _) in rows.values():
        succeeded, failed_at = health.get(delivery.endpoint_id, (False, None))
        if status == Delivery.Status.SUCCEEDED:
            succeeded = True
        else:
            failed_at = min(failed_at or sent.attempted_at, sent.attempted_at)
        health[delivery.endpoint_id] = (succeeded, failed_at)
    # Written where it may change: a failure, or a success of an endpoint the round saw failing (another run
    # may have recorded a failure since: the next failure or success here writes it right again).
    changed = {
        endpoint_id: state for endpoint_id, state in health.items()
        if not state[0] or endpoints[endpoint_id].failing_since is not None
    }  # fmt: skip
    failing = [endpoint_id for endpoint_id, (succeeded, _) in health.items() if not succeeded]
    # All healthy (the common case): one statement, atomic by itself, and no BEGIN / COMMIT round trips.
    guard = transaction.atomic() if changed or failing else contextlib.nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(
            _OUTCOMES_RECORD,
            {
                "claim_token": claim_token,
                "ids": list(rows),
                "statuses": [row[2][0] for row in rows.values()],
                "codes": [row[2][1] for row in rows.values()],
                "errors": [row[2][2] for row in rows.values()],
                "next_attempts_at": [row[2][3] for row in rows.values()],
                "attempted_at": [row[1].attempted_at for row in rows.values()],
                "durations": [row[1].duration_ms for row in rows.values()],
            },
        )
        written = {row[0] for row in cursor.fetchall()}
        if changed:
            cursor.execute(
                _ENDPOINT_HEALTH,
                {"ids": list(changed), "succeeded": [h[0] for h in changed.values()], "failed_at": [h[1] for h in changed.values()]},
            )
        if failing:
            cursor.execute(
                _DEACTIVATE,
                {
                    "ids": failing,
                    "now": now,
                    "failing_before": now - timedelta(seconds=settings.EVENTS_ENDPOINT_DEACTIVATE_AFTER_SECONDS),
                },
            )
            for endpoint_id, url in cursor.fetchall():
                summary.deactivated.append(endpoint_id)
                logger.warning("webhook endpoint %s (%s) deactivated: every delivery failed for 24 h", endpoint_id, url)
    for delivery_id, (_, _, (status, _, _, _)) in rows.items():
        if delivery_id not in written:
            logger.warning("webhook delivery %s: claim lost before its outcome (%s) was recorded", delivery_id, status)
        elif status == Delivery.Status.SUCCEEDED:
            summary.succeeded += 1
        elif status == Delivery.Status.FAILED:
            summary.retrying += 1
        else:
            summary.dead += 1


def _renew(*, claim_token: uuid.UUID, ids: list[uuid.UUID]) -> None:
    if not ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _RENEW,
            {"ids": ids, "claim_token": claim_token,
             "lease_expires_at": timezone.now() + timedelta(seconds=settings.EVENTS_LEASE_SECONDS)},
        )  # fmt: skip


def _release(*, claim_token: uuid.UUID, untried: list[_Claimed], summary: DeliveryRunSummary) -> None:
    summary.released += len(untried)
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE, {"ids": [delivery.id for delivery in untried], "claim_token": claim_token})


def webhook_deliveries_next_due_at() -> datetime | None:
    """When the tenant next has a delivery to send (None: nothing unfinished on an active endpoint)."""
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_DUE)
        return cursor.fetchone()[0]


def webhook_work_version() -> int | None:
    """The tenant's `webhooks` mark as a run's task starts (see tenants.work.tenant_work_settle)."""
    return tenant_work_version(kind=TenantWork.Kind.WEBHOOKS)


def webhook_work_settle(*, version: int | None) -> datetime | None:
    """The end of a run's task: the tenant's mark goes to the next delivery's due time (retries, leases, what
    the run left for lack of time), or goes away when nothing is unfinished. Returns that time."""
    next_due_at = webhook_deliveries_next_due_at()
    tenant_work_settle(kind=TenantWork.Kind.WEBHOOKS, version=version, next_due_at=next_due_at)
    return next_due_at
