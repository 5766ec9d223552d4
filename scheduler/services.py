"""Outbound messages and the tenant's periodic send job.

A run (`outbound_send_due`, started by celery-beat through the tenant's PeriodicTask) recovers expired
claims, claims up to `batch_size` due messages with SELECT ... FOR UPDATE SKIP LOCKED in a short
transaction, and then POSTs them one by one, outside any transaction. Every write after the claim is
conditional on the run's claim token, so a run that lost its claim (it stalled past the lease) can
neither send nor record anything for that message.
"""

import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_tenants.utils import get_public_schema_name

from core.exceptions import ConflictError
from core.outbound_urls import OutboundUrlRefused, OutboundUrlUnresolved, outbound_url_check
from core.redis import get_redis, tenant_key
from scheduler.models import OutboundMessage, SchedulerSetting, validate_e164

logger = logging.getLogger(__name__)

SEND_TASK_NAME = "scheduler.tasks.outbound_send_due_task"
PERIODIC_TASK_PREFIX = "outbound-send:"
# A run queued longer than its interval (workers down, tenant backlog) is dropped rather than piling up;
# never less than this, so a short interval does not expire runs that merely waited for a busy worker.
MIN_RUN_EXPIRY_SECONDS = 60
ERROR_MAX_LENGTH = 1000


def _tenant_schema_name() -> str:
    schema_name = connection.schema_name
    if schema_name == get_public_schema_name():
        raise RuntimeError("The outbound scheduler works inside a tenant's schema.")
    return schema_name


def outbound_periodic_task_name(*, schema_name: str) -> str:
    return f"{PERIODIC_TASK_PREFIX}{schema_name}"


def outbound_cache_key(*, schema_name: str, message_id: uuid.UUID | str) -> str:
    return tenant_key(schema_name, "outbound", message_id)


# --- the job's schedule (celery-beat, public schema) ---------------------------------------------------


def _periodic_task_sync(*, schema_name: str, setting: SchedulerSetting, restart: bool = False) -> PeriodicTask:
    """Creates or updates the tenant's PeriodicTask so that beat runs what the setting row says.

    `restart` clears beat's last run, so the next run comes one full interval after now (beat counts from
    the task's `date_changed` when `last_run_at` is empty).
    """
    interval, _ = IntervalSchedule.objects.get_or_create(every=setting.interval_seconds, period=IntervalSchedule.SECONDS)
    name = outbound_periodic_task_name(schema_name=schema_name)
    task = PeriodicTask.objects.select_for_update().filter(name=name).first() or PeriodicTask(name=name)
    task.task = SEND_TASK_NAME
    task.interval = interval
    task.crontab = task.solar = task.clocked = None
    # tenant-schemas-celery runs the task in this schema; tenants.queues.route_task sends it to the
    # tenant's queue by the same header.
    task.headers = json.dumps({"_schema_name": schema_name})
    task.enabled = setting.running
    task.expire_seconds = max(setting.interval_seconds, MIN_RUN_EXPIRY_SECONDS)
    task.description = f"Outbound scheduler of tenant {schema_name}: sends due messages to its webhook."
    if restart:
        task.last_run_at = None
    # Beat reloads its schedule when PeriodicTasks changes, which the model's pre_save signal only does
    # for saves not flagged `no_changes` (beat flags its own bookkeeping saves).
    task.no_changes = False
    task.save()
    return task


def scheduler_ensure() -> SchedulerSetting:
    """Gives the current tenant its scheduler setting (defaults from settings) and its beat PeriodicTask.

    Idempotent: provisioning calls it for a new tenant, `migrate_schemas` for every existing one. An
    existing setting is left as it is; the PeriodicTask is brought in line with it.
    """
    schema_name = _tenant_schema_name()
    with transaction.atomic():
        setting, _ = SchedulerSetting.objects.select_for_update().get_or_create(id=SchedulerSetting.SINGLETON_ID)
        task = PeriodicTask.objects.filter(name=outbound_periodic_task_name(schema_name=schema_name)).first()
        in_line = (
            task is not None
            and task.enabled == setting.running
            and task.interval_id is not None
            and task.interval.every == setting.interval_seconds
            and task.interval.period == IntervalSchedule.SECONDS
            and json.loads(task.headers or "{}").get("_schema_name") == schema_name
        )
        if not in_line:
            _periodic_task_sync(schema_name=schema_name, setting=setting)
    return setting


def scheduler_remove(*, schema_name: str) -> None:
    """Deletes a tenant's PeriodicTask (its setting goes with its schema). Called by tenant deprovisioning."""
    PeriodicTask.objects.filter(name=outbound_periodic_task_name(schema_name=schema_name)).delete()


def _setting_for_update() -> SchedulerSetting:
    setting, _ = SchedulerSetting.objects.select_for_update().get_or_create(id=SchedulerSetting.SINGLETON_ID)
    return setting


def scheduler_start() -> SchedulerSetting:
    """Starts the tenant's job: the first run comes one interval from now. Starting a running job changes nothing."""
    schema_name = _tenant_schema_name()
    with transaction.atomic():
        setting = _setting_for_update()
        if setting.running:
            _periodic_task_sync(schema_name=schema_name, setting=setting)  # heals a PeriodicTask out of line
            return setting
        setting.running = True
        setting.schedule_anchor_at = timezone.now()
        setting.save(update_fields=["running", "schedule_anchor_at", "updated_at"])
        _periodic_task_sync(schema_name=schema_name, setting=setting, restart=True)
    logger.info("outbound scheduler started")
    return setting


def scheduler_stop() -> SchedulerSetting:
    """Stops the tenant's job: beat stops sending runs, and a run already queued finds it stopped and sends nothing."""
    schema_name = _tenant_schema_name()
    with transaction.atomic():
        setting = _setting_for_update()
        if setting.running:
            setting.running = False
            setting.save(update_fields=["running", "updated_at"])
        _periodic_task_sync(schema_name=schema_name, setting=setting)
    logger.info("outbound scheduler stopped")
    return setting


def scheduler_update(
    *,
    interval_seconds: int | None = None,
    batch_size: int | None = None,
    webhook_url: str | None = None,
    auth_key: str | None = None,
) -> SchedulerSetting:
    """Changes the tenant's job settings. Invalid input: nothing changes.

    A new interval reaches beat without a restart and restarts the countdown: the next run comes one new
    interval after the change (from 120 s to 5 s, the next run is 5 s away, not "overdue since 115 s").
    """
    schema_name = _tenant_schema_name()
    with transaction.atomic():
        setting = _setting_for_update()
        changes = {
            "interval_seconds": interval_seconds,
            "batch_size": batch_size,
            "webhook_url": webhook_url,
            "auth_key": auth_key,
        }
        changed = [name for name, value in changes.items() if value is not None and getattr(setting, name) != value]
        for name in changed:
            setattr(setting, name, changes[name])
        setting.full_clean()
        if "interval_seconds" in changed:
            setting.schedule_anchor_at = timezone.now()
            changed.append("schedule_anchor_at")
        if changed:
            setting.save(update_fields=[*changed, "updated_at"])
        if "interval_seconds" in changed:
            _periodic_task_sync(schema_name=schema_name, setting=setting, restart=True)
    return setting


# --- messages ------------------------------------------------------------------------------------------


def outbound_message_create(*, to: str, content: str) -> OutboundMessage:
    """Queues a message for the tenant's next runs. Raises ValidationError (nothing written) on bad input."""
    errors = {}
    try:
        validate_e164(to)
    except ValidationError as error:
        errors["to"] = error.messages
    max_length = settings.OUTBOUND_CONTENT_MAX_LENGTH
    if not content.strip():
        errors["content"] = ["This field may not be blank."]
    elif len(content) > max_length:
        errors["content"] = [f"Ensure this field has no more than {max_length} characters."]
    if errors:
        raise ValidationError(errors)
    return OutboundMessage.objects.create(to=to, content=content)


def outbound_message_retry(*, message_id: uuid.UUID) -> OutboundMessage:
    """Puts a failed message back in line with a fresh set of attempts. 409 unless it is `failed`."""
    updated = OutboundMessage.objects.filter(id=message_id, status=OutboundMessage.Status.FAILED).update(
        status=OutboundMessage.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), updated_at=timezone.now()
    )
    message = OutboundMessage.objects.get(id=message_id)  # DoesNotExist for an unknown id
    if not updated:
        raise ConflictError(f'Only failed messages can be retried; this one is "{message.status}".')
    return message


# --- the run -------------------------------------------------------------------------------------------


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
    exhausted = expired.filter(attempts__gte=settings.OUTBOUND_MAX_ATTEMPTS).update(
        status=OutboundMessage.Status.FAILED,
        claim_token=None,
        lease_expires_at=None,
        last_error="Delivery outcome unknown: the sending run stopped before recording it, and no attempts are left.",
        updated_at=now,
    )
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


def outbound_claim_due(*, batch_size: int, claim_token: uuid.UUID, now: datetime) -> list[OutboundMessage]:
    """Claims up to `batch_size` due pending messages, oldest first, for one run.

    SKIP LOCKED: a concurrent run skips the rows this one is claiming instead of waiting for them and then
    claiming them again; once committed they are `sending` and out of every other run's query.
    """
    lease_expires_at = now + timedelta(seconds=settings.OUTBOUND_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            OutboundMessage.objects.select_for_update(skip_locked=True)
            .filter(status=OutboundMessage.Status.PENDING, next_attempt_at__lte=now)
            .order_by("created_at", "id")
            .values_list("id", flat=True)[:batch_size]
        )
        if ids:
            OutboundMessage.objects.filter(id__in=ids).update(
                status=OutboundMessage.Status.SENDING,
                claim_token=claim_token,
                lease_expires_at=lease_expires_at,
                updated_at=now,
            )
    return list(OutboundMessage.objects.filter(id__in=ids).order_by("created_at", "id"))


def _webhook_url_refusal(*, url: str) -> _Outcome | None:
    """The SSRF guard at send time: the URL was checked when set, but its host may resolve elsewhere now."""
    try:
        outbound_url_check(url=url)
    except OutboundUrlUnresolved as error:
        return _Outcome("retry", error=str(error))
    except OutboundUrlRefused as error:
        return _Outcome("failed", error=f"Not sent: {error}")
    return None


def _post(*, session: requests.Session, setting: SchedulerSetting, message: OutboundMessage) -> _Outcome:
    timeout = settings.OUTBOUND_HTTP_TIMEOUT_SECONDS
    refusal = _webhook_url_refusal(url=setting.webhook_url)
    if refusal is not None:
        return refusal
    try:
        response = session.post(
            setting.webhook_url,
            json={"to": message.to, "content": message.content},
            headers={"x-ins-auth-key": setting.auth_key, "Idempotency-Key": str(message.id)},
            timeout=(timeout, timeout),
            # A redirected POST may turn into a GET or go elsewhere: treat a 3xx as a misconfiguration.
            allow_redirects=False,
        )
    except (requests.Timeout, requests.ConnectionError) as error:
        return _Outcome("retry", error=f"{error.__class__.__name__}: {error}")
    except requests.RequestException as error:  # an invalid URL and the like: retrying cannot help
        return _Outcome("failed", error=f"{error.__class__.__name__}: {error}")

    status = response.status_code
    body = response.text[:300]
    if 200 <= status < 300:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        provider_id = payload.get("messageId") if isinstance(payload, dict) else None
        if provider_id in (None, "") or isinstance(provider_id, (dict, list, bool)):
            # Accepted, maybe delivered, but unrecorded: never resend it on our own (an operator may retry).
            return _Outcome("failed", error=f"HTTP {status} without a messageId in a JSON body: {body}")
        return _Outcome("sent", message_id=str(provider_id)[:255])
    if status == 429 or status >= 500:
        return _Outcome("retry", error=f"HTTP {status}: {body}", retry_after=_retry_after_seconds(response))
    return _Outcome("failed", error=f"HTTP {status}: {body}")


def _retry_after_seconds(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:  # absent, or an HTTP date: the backoff alone decides
        return None


def _record(*, message: OutboundMessage, claim_token: uuid.UUID, outcome: _Outcome, attempts: int) -> str | None:
    """Writes the outcome if the run still holds the claim; returns the status written, or None."""
    now = timezone.now()
    ours = OutboundMessage.objects.filter(id=message.id, status=OutboundMessage.Status.SENDING, claim_token=claim_token)
    released = {"claim_token": None, "lease_expires_at": None, "updated_at": now}
    if outcome.status == "sent":
        written = ours.update(
            status=OutboundMessage.Status.SENT, message_id=outcome.message_id, sent_at=now, last_error=None, **released
        )
        if written:
            _cache_sent(message=message, provider_id=outcome.message_id, sent_at=now)
        status = OutboundMessage.Status.SENT
    elif outcome.status == "retry" and attempts < settings.OUTBOUND_MAX_ATTEMPTS:
        delay = outbound_retry_delay(attempts=attempts, retry_after=outcome.retry_after)
        written = ours.update(
            status=OutboundMessage.Status.PENDING,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=outcome.error[:ERROR_MAX_LENGTH],
            **released,
        )
        status = OutboundMessage.Status.PENDING
    else:
        error = outcome.error if outcome.status == "failed" else f"{outcome.error} (gave up after {attempts} attempts)"
        written = ours.update(status=OutboundMessage.Status.FAILED, last_error=error[:ERROR_MAX_LENGTH], **released)
        status = OutboundMessage.Status.FAILED
    if not written:
        logger.warning("outbound %s: claim lost before its outcome (%s) was recorded", message.id, outcome.status)
        return None
    return status


def _cache_sent(*, message: OutboundMessage, provider_id: str, sent_at: datetime) -> None:
    # The row is the record; the cache is a convenience for readers, so a Redis outage only logs.
    try:
        get_redis().set(
            outbound_cache_key(schema_name=_tenant_schema_name(), message_id=message.id),
            json.dumps({"messageId": provider_id, "sent_at": sent_at.isoformat()}),
            ex=settings.OUTBOUND_CACHE_TTL_SECONDS,
        )
    except Exception:
        logger.warning("outbound %s: sent, but caching its messageId in Redis failed", message.id, exc_info=True)


def outbound_send_due(*, now: datetime | None = None) -> OutboundRunSummary:
    """One run of the tenant's job: recover expired claims, claim up to batch_size due messages, send them.

    Safe to run concurrently with itself (two workers, an overlapping slow run): claims never overlap.
    Messages claimed but not yet sent when the run is interrupted are released at once.
    """
    now = now or timezone.now()
    summary = OutboundRunSummary()
    setting = SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).first()
    if setting is None:
        setting = scheduler_ensure()
    if not setting.running:
        summary.skipped = "stopped"
        return summary
    SchedulerSetting.objects.filter(id=setting.id).update(last_run_at=now)
    summary.recovered = outbound_recover_expired(now=now)
    if not setting.webhook_url:
        logger.warning("outbound: no webhook_url configured; pending messages wait")
        summary.skipped = "no webhook_url"
        return summary

    claim_token = uuid.uuid4()
    claimed = outbound_claim_due(batch_size=setting.batch_size, claim_token=claim_token, now=now)
    remaining = [message.id for message in claimed]
    try:
        with requests.Session() as session:
            for message in claimed:
                remaining.remove(message.id)
                attempts = message.attempts + 1
                # Count the attempt and renew the lease, only if the claim is still ours.
                started = OutboundMessage.objects.filter(
                    id=message.id, status=OutboundMessage.Status.SENDING, claim_token=claim_token
                ).update(
                    attempts=F("attempts") + 1,
                    lease_expires_at=timezone.now() + timedelta(seconds=settings.OUTBOUND_LEASE_SECONDS),
                )
                if not started:
                    continue
                outcome = _post(session=session, setting=setting, message=message)
                status = _record(message=message, claim_token=claim_token, outcome=outcome, attempts=attempts)
                if status == OutboundMessage.Status.SENT:
                    summary.sent.append(message.id)
                elif status == OutboundMessage.Status.PENDING:
                    summary.retrying.append(message.id)
                elif status == OutboundMessage.Status.FAILED:
                    summary.failed.append(message.id)
    finally:
        if remaining:  # interrupted (time limit, shutdown): hand back what was never tried
            OutboundMessage.objects.filter(
                id__in=remaining, status=OutboundMessage.Status.SENDING, claim_token=claim_token
            ).update(status=OutboundMessage.Status.PENDING, claim_token=None, lease_expires_at=None)
    if summary.sent or summary.retrying or summary.failed:
        logger.info(
            "outbound run: %d sent, %d to retry, %d failed", len(summary.sent), len(summary.retrying), len(summary.failed)
        )
    return summary
