"""Retention of the outbox: events older than EVENTS_RETENTION_DAYS are deleted with their deliveries and
attempts, in bounded batches, once none of their deliveries is unfinished (an event a pending or retrying
delivery still needs is kept until that delivery is final).

Due-driven per tenant (tenants.work): the transaction that writes a tenant's events marks its
`events_retention` work when it has none (due when the events written now expire); the retention task,
sent by the dispatcher only to tenants whose mark is due, deletes what has expired and moves the mark to the
next expiry, or removes it when no event is left. A tenant that writes no events has no mark and costs
nothing.

A mark must not be lost between a writer that saw it (and so made none) and the task removing it as it
finds no event: writers check the mark under a shared transaction-level advisory lock of the tenant, and the
task settles under the exclusive one, so it reads the events only once every writer that saw the mark has
committed, and writers after it see the mark gone and make a new one.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tenants.models import TenantWork
from tenants.work import tenant_work_mark, tenant_work_marks_batching, tenant_work_settle, tenant_work_version

logger = logging.getLogger(__name__)

KIND = TenantWork.Kind.EVENTS_RETENTION

# The advisory lock's first key, a constant of this module; the second is the tenant (hash of its schema).
_LOCK_CLASS = 20_0020

# Expired events none of whose deliveries is unfinished, oldest first, locked (SKIP LOCKED: two tasks of a
# tenant share the work).
_EXPIRED = """
SELECT event.id FROM events_event AS event
WHERE event.created_at < %(cutoff)s
  AND NOT EXISTS (
      SELECT 1 FROM events_delivery AS delivery
      WHERE delivery.event_id = event.id AND (delivery.status = 'pending' OR delivery.status = 'failed')
  )
ORDER BY event.created_at, event.id
LIMIT %(limit)s
FOR UPDATE OF event SKIP LOCKED
"""

# Their deliveries, locked: a redelivery that made one unfinished meanwhile is seen here (FOR UPDATE reads the
# row as it is once its lock is free), and one that comes later waits for this transaction and finds it gone.
_DELIVERIES = """
SELECT id, event_id, status FROM events_delivery WHERE event_id = ANY(%(event_ids)s) ORDER BY id FOR UPDATE
"""

_DELETE = """
WITH attempts AS (
    DELETE FROM events_deliveryattempt WHERE delivery_id = ANY(%(delivery_ids)s)
),
deliveries AS (
    DELETE FROM events_delivery WHERE id = ANY(%(delivery_ids)s)
)
DELETE FROM events_event WHERE id = ANY(%(event_ids)s)
"""

# When the next event expires: the youngest kept, or, for expired events an unfinished delivery still holds,
# a day from now (such a delivery is final within the retry schedule, or waits for its endpoint's reactivation).
_NEXT_EXPIRY = """
SELECT (SELECT min(created_at) FROM events_event WHERE created_at >= %(cutoff)s),
       EXISTS (SELECT 1 FROM events_event WHERE created_at < %(cutoff)s)
"""


@dataclass
class RetentionSummary:
    events: int = 0
    deliveries: int = 0
    finished: bool = True  # False: the time was up with expired events left (the mark comes due at once)


def _lock(*, shared: bool) -> None:
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, hashtext(%s))", [_LOCK_CLASS, connection.schema_name])


def events_retention_mark() -> None:
    """Called by the transaction that writes events: marks the tenant's retention work if it has none (due
    when these events expire). One indexed read when the mark exists (the common case)."""
    if tenant_work_marks_batching():
        # A drain batch: the mark joins the batch's one statement of marks, at no extra round trip. Its version
        # goes up, so a retention task settling at the same time leaves the row (tenant_work_settle compares
        # versions): the lock and the read below are for writers that mark only when no mark exists.
        tenant_work_mark(kind=KIND, due_at=timezone.now() + timedelta(days=settings.EVENTS_RETENTION_DAYS))
        return
    _lock(shared=True)
    if tenant_work_version(kind=KIND) is None:
        tenant_work_mark(kind=KIND, due_at=timezone.now() + timedelta(days=settings.EVENTS_RETENTION_DAYS))


def _cutoff(now: datetime) -> datetime:
    return now - timedelta(days=settings.EVENTS_RETENTION_DAYS)


def events_retention_run(*, now: datetime | None = None, max_seconds: float | None = None) -> RetentionSummary:
    """Deletes the tenant's expired events (older than EVENTS_RETENTION_DAYS at `now`) with their deliveries
    and attempts, EVENTS_RETENTION_BATCH events per transaction, until none is left or `max_seconds` pass.
    Events an unfinished delivery needs are kept."""
    now = now or timezone.now()
    cutoff = _cutoff(now)
    max_seconds = settings.EVENTS_RUN_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    summary = RetentionSummary()
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_EXPIRED, {"cutoff": cutoff, "limit": settings.EVENTS_RETENTION_BATCH})
            event_ids = [row[0] for row in cursor.fetchall()]
            if not event_ids:
                return summary
            cursor.execute(_DELIVERIES, {"event_ids": event_ids})
            deliveries = cursor.fetchall()
            held = {event_id for _, event_id, status in deliveries if status in ("pending", "failed")}
            event_ids = [event_id for event_id in event_ids if event_id not in held]
            delivery_ids = [delivery_id for delivery_id, event_id, _ in deliveries if event_id not in held]
            cursor.execute(_DELETE, {"event_ids": event_ids, "delivery_ids": delivery_ids})
        summary.events += len(event_ids)
        summary.deliveries += len(delivery_ids)
        if time.monotonic() >= deadline:
            summary.finished = False
            return summary


def events_retention_next_due_at(*, now: datetime | None = None) -> datetime | None:
    """When the tenant's next event expires (None: no event left)."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_EXPIRY, {"cutoff": _cutoff(now)})
        youngest_kept, expired_held = cursor.fetchone()
    candidates = []
    if youngest_kept is not None:
        candidates.append(youngest_kept + timedelta(days=settings.EVENTS_RETENTION_DAYS))
    if expired_held:
        candidates.append(now + timedelta(days=1))
    return min(candidates) if candidates else None


def events_retention_settle(*, version: int | None, summary: RetentionSummary, now: datetime | None = None) -> None:
    """The end of the retention task: the mark goes to the next expiry (now, if the time was up with expired
    events left), or goes away when no event is left. Under the exclusive lock (see the module's docstring)."""
    now = now or timezone.now()
    with transaction.atomic():
        _lock(shared=False)
        next_due_at = now if not summary.finished else events_retention_next_due_at(now=now)
        tenant_work_settle(kind=KIND, version=version, next_due_at=next_due_at)
    if summary.events:
        logger.info("events retention: %d events and %d deliveries deleted", summary.events, summary.deliveries)
