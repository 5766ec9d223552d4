import logging
import random
import uuid

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils.dateparse import parse_datetime

from conversations.services import (
    counts_reconcile,
    creations_persist,
    inbound_event_attempt_failed,
    inbound_event_record,
)
from sociomile.celery import app
from tenants.models import TenantWork
from tenants.work import tenant_work_settle, tenant_work_version

logger = logging.getLogger(__name__)


def _backoff_seconds(attempt: int) -> float:
    # Exponential with full jitter around it, capped: retries of many failing events do not synchronise.
    base = settings.INBOUND_EVENT_RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1)
    return min(base * random.uniform(0.5, 1.5), 60.0)


@app.task(bind=True, max_retries=None)
def inbound_event_record_task(self, event_id: str, payload: dict, created_at: str) -> None:
    """Persists one event published to the tenant's queue into the tenant's event log (idempotent).

    Any failure is retried with backoff up to INBOUND_EVENT_MAX_ATTEMPTS attempts, each recorded on the
    event (`accepted` with its error); then the event is parked as `dead` with its payload and last error,
    for an operator to see in the tenant admin. Only while even that record cannot be written (the
    database is unreachable) does it keep retrying, so an accepted event is never dropped.
    """
    attempt = self.request.retries + 1
    event_uuid, accepted_at = uuid.UUID(event_id), parse_datetime(created_at)
    try:
        inbound_event_record(event_id=event_uuid, payload=payload, created_at=accepted_at, attempt=attempt)
        return
    except Exception as error:
        failure = error
    is_final = attempt >= settings.INBOUND_EVENT_MAX_ATTEMPTS
    try:
        inbound_event_attempt_failed(
            event_id=event_uuid,
            payload=payload,
            created_at=accepted_at,
            attempt=attempt,
            error=failure,
            is_final=is_final,
        )
    except Exception:
        logger.exception("event %s: could not record failed attempt %s; retrying", event_id, attempt)
        raise self.retry(countdown=_backoff_seconds(attempt), exc=failure) from failure
    if is_final:
        logger.error("event %s parked as dead after %s attempts: %s", event_id, attempt, failure)
        return
    logger.warning("event %s: attempt %s failed (%s); retrying", event_id, attempt, failure)
    raise self.retry(countdown=_backoff_seconds(attempt), exc=failure)


# PostgreSQL or Redis away for a moment (a restart, a failover): the queued creations wait in Redis, and the
# drain is retried with backoff so they are persisted soon after it is back, even if no new request
# schedules another drain. Bounded: the dispatcher's drain sweep (CREATIONS_SWEEP_SECONDS, tenants.work) is the
# safety net after that.
_DRAIN_TRANSIENT_ERRORS = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)


@app.task(autoretry_for=_DRAIN_TRANSIENT_ERRORS, max_retries=8, retry_backoff=1, retry_backoff_max=10, retry_jitter=True)
def creations_persist_task() -> None:
    """Drains the tenant's queued chat and message creations into PostgreSQL, in batches (idempotent)."""
    creations_persist(
        batch_size=settings.CREATIONS_BATCH_SIZE,
        linger_seconds=settings.CREATIONS_DRAIN_LINGER_MS / 1000,
        max_seconds=settings.CREATIONS_DRAIN_MAX_SECONDS,
    )


@app.task
def counts_reconcile_task() -> None:
    """Repairs drifted chats_count / messages_count in the tenant's schema (the periodic safety net).

    Sent by the dispatcher to tenants that had creations (tenants.work, kind `counts`); settles that mark.
    A recount the drain's lock kept from running stays due one lease later (the dispatcher moved it there).
    """
    version = tenant_work_version(kind=TenantWork.Kind.COUNTS)
    if counts_reconcile() is None:
        return
    tenant_work_settle(kind=TenantWork.Kind.COUNTS, version=version, next_due_at=None)
