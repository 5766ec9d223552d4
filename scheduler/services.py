"""Outbound messages and the tenant's periodic send job.

A run (`outbound_send_due`, sent by the dispatcher when the tenant's `outbound` mark in the due-work index
comes due: see "the job's schedule" below) recovers expired
claims, claims up to `batch_size` due messages in one UPDATE ... RETURNING over a SELECT ... FOR UPDATE
SKIP LOCKED, and then POSTs them in waves of parallel requests, outside any transaction. Every write after
the claim is conditional on the run's claim token, so a run that lost its claim (it stalled past the
lease) can neither send nor record anything for that message.
"""

import contextlib
import json
import logging
import os
import queue
import random
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests.utils
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from core.exceptions import ConflictError
from core.outbound_urls import (
    OutboundAddressRefused,
    OutboundUrlRefused,
    OutboundUrlUnresolved,
    PublicAddressHTTPConnection,
    PublicAddressHTTPSConnection,
    outbound_url_check,
)
from core.redis import redis_script, tenant_key
from core.text import storable_text, visible_ascii_validator
from scheduler.models import OutboundMessage, SchedulerSetting, validate_e164
from scheduler.selectors import scheduler_first_run_at, scheduler_next_run_at
from tenants.models import TenantWork
from tenants.work import tenant_work_clear, tenant_work_mark, tenant_work_settle, tenant_work_version

logger = logging.getLogger(__name__)

ERROR_MAX_LENGTH = 1000
MESSAGE_ID_MAX_LENGTH = 255  # the column's


def _tenant_schema_name() -> str:
    schema_name = connection.schema_name
    if schema_name == get_public_schema_name():
        raise RuntimeError("The outbound scheduler works inside a tenant's schema.")
    return schema_name


def outbound_cache_key(*, schema_name: str, message_id: uuid.UUID | str) -> str:
    return tenant_key(schema_name, "outbound", message_id)


# --- the job's schedule (the due-work index, tenants.work) -------------------------------------------------
#
# A run goes every interval while the job is running, but only for a tenant with something to send: the
# tenant's `outbound` mark in the due-work index is due at the next run time (one interval after the last
# run, or after the schedule began: start, interval change) while it has pending or in-flight messages, and
# the dispatcher sends the run then. A running job with nothing pending has no mark and costs nothing.


def _outbound_work_due_at(*, setting: SchedulerSetting, now: datetime) -> datetime | None:
    """When the tenant's next run must happen: the first run time at or after the earliest moment a message
    can be sent (a pending one's next attempt, an in-flight one's lease running out). None: stopped, or
    nothing to send."""
    if not setting.running:
        return None
    earliest = _earliest_due_message_at()
    if earliest is None:
        return None
    return scheduler_next_run_at(setting=setting, after=max(now, earliest))


def _earliest_due_message_at() -> datetime | None:
    with connection.cursor() as cursor:
        cursor.execute(_EARLIEST_DUE_MESSAGE)
        return cursor.fetchone()[0]


# Both halves read the partial indexes of pending and of sending messages.
_EARLIEST_DUE_MESSAGE = """
SELECT least(
    (SELECT min(next_attempt_at) FROM scheduler_outboundmessage WHERE status = 'pending'),
    (SELECT min(lease_expires_at) FROM scheduler_outboundmessage WHERE status = 'sending')
)
"""


def _outbound_work_reschedule(*, setting: SchedulerSetting) -> None:
    """Puts the tenant's outbound mark where the setting and the messages say, in the caller's transaction
    (start, interval change, ensure): the schedule restarted, so the new time replaces the old one."""
    due_at = _outbound_work_due_at(setting=setting, now=timezone.now())
    if due_at is None:
        tenant_work_clear(kind=TenantWork.Kind.OUTBOUND)
    else:
        tenant_work_mark(kind=TenantWork.Kind.OUTBOUND, due_at=due_at, replace=True)


def _outbound_work_mark_new_message() -> None:
    """A message became pending (created, retried): the next run is due at the next run time, if the job runs."""
    setting = SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).first()
    if setting is not None and setting.running:
        tenant_work_mark(kind=TenantWork.Kind.OUTBOUND, due_at=scheduler_next_run_at(setting=setting, after=timezone.now()))


def outbound_work_version() -> int | None:
    """The tenant's outbound mark as a run's task starts (see tenants.work.tenant_work_settle)."""
    return tenant_work_version(kind=TenantWork.Kind.OUTBOUND)


def outbound_run_is_due(*, now: datetime | None = None) -> bool:
    """Whether a run may go now: the job is running and its interval has passed since the last run (or since
    the schedule began). A dispatch can come before that (a mark that arrived while a run went is due one
    lease later): such a run sends nothing, and the settle puts the mark at the real run time."""
    setting = SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).first()
    if setting is None:
        setting = scheduler_ensure()
    if not setting.running:
        return False
    now = now or timezone.now()
    return scheduler_first_run_at(setting=setting) <= now


def outbound_work_settle(*, version: int | None) -> None:
    """The end of a run's task: the tenant's mark goes to the next run time while something is left to send
    (more pending than a batch, retries waiting for their next attempt, messages in flight), else it goes."""
    setting = SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).first()
    due_at = None if setting is None else _outbound_work_due_at(setting=setting, now=timezone.now())
    tenant_work_settle(kind=TenantWork.Kind.OUTBOUND, version=version, next_due_at=due_at)


def scheduler_ensure() -> SchedulerSetting:
    """Gives the current tenant its scheduler setting (defaults from settings), and its outbound mark if it
    has messages to send.

    Idempotent: provisioning calls it for a new tenant, `migrate_schemas` for every existing one. An
    existing setting is left as it is.
    """
    _tenant_schema_name()
    with transaction.atomic():
        setting, _ = SchedulerSetting.objects.select_for_update().get_or_create(id=SchedulerSetting.SINGLETON_ID)
        due_at = _outbound_work_due_at(setting=setting, now=timezone.now())
        if due_at is not None:
            tenant_work_mark(kind=TenantWork.Kind.OUTBOUND, due_at=due_at)
    return setting


def _setting_for_update() -> SchedulerSetting:
    setting, _ = SchedulerSetting.objects.select_for_update().get_or_create(id=SchedulerSetting.SINGLETON_ID)
    return setting


def scheduler_start() -> SchedulerSetting:
    """Starts the tenant's job: the first run comes one interval from now. Starting a running job changes nothing."""
    _tenant_schema_name()
    with transaction.atomic():
        setting = _setting_for_update()
        if setting.running:
            return setting
        setting.running = True
        setting.schedule_anchor_at = timezone.now()
        setting.save(update_fields=["running", "schedule_anchor_at", "updated_at"])
        _outbound_work_reschedule(setting=setting)
    logger.info("outbound scheduler started")
    return setting


def scheduler_stop() -> SchedulerSetting:
    """Stops the tenant's job: its mark goes (no run is sent), and a run already queued finds it stopped and
    sends nothing. Other tenants' marks are not touched."""
    _tenant_schema_name()
    with transaction.atomic():
        setting = _setting_for_update()
        if setting.running:
            setting.running = False
            setting.save(update_fields=["running", "updated_at"])
        tenant_work_clear(kind=TenantWork.Kind.OUTBOUND)
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

    A new interval restarts the countdown: the next run comes one new interval after the change (from 120 s
    to 5 s, the next run is 5 s away, not "overdue since 115 s"); the tenant's mark moves there.
    """
    _tenant_schema_name()
    errors = {}
    for name, value in (("webhook_url", webhook_url), ("auth_key", auth_key)):
        try:
            if value is not None:
                visible_ascii_validator(value)  # sent in the request line and a header, as they are
        except ValidationError as error:
            errors[name] = error.messages
    if errors:
        raise ValidationError(errors)
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
        # Only what this call changes: a stored value the validators now refuse (a webhook_url set from
        # OUTBOUND_WEBHOOK_URL on a host with no dot, say) must not block a change of the batch size.
        setting.full_clean(exclude=[name for name in changes if name not in changed])
        if "interval_seconds" in changed:
            setting.schedule_anchor_at = timezone.now()
            changed.append("schedule_anchor_at")
        if changed:
            setting.save(update_fields=[*changed, "updated_at"])
        if "interval_seconds" in changed:
            _outbound_work_reschedule(setting=setting)
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
    with transaction.atomic():
        message = OutboundMessage.objects.create(to=to, content=content)
        _outbound_work_mark_new_message()
    return message


def outbound_message_retry(*, message_id: uuid.UUID) -> OutboundMessage:
    """Puts a failed message back in line with a fresh set of attempts. 409 unless it is `failed`."""
    with transaction.atomic():
        updated = OutboundMessage.objects.filter(id=message_id, status=OutboundMessage.Status.FAILED).update(
            status=OutboundMessage.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), updated_at=timezone.now()
        )
        message = OutboundMessage.objects.get(id=message_id)  # DoesNotExist for an unknown id
        if not updated:
            raise ConflictError(f'Only failed messages can be retried; this one is "{message.status}".')
        _outbound_work_mark_new_message()
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

# Outcomes, one row each, written together where the claim is still ours.
_OUTCOMES_RECORD = """
UPDATE scheduler_outboundmessage AS message
SET status = outcome.status,
    message_id = CASE WHEN outcome.status = 'sent' THEN outcome.provider_id ELSE message.message_id END,
    sent_at = CASE WHEN outcome.status = 'sent' THEN %(now)s ELSE message.sent_at END,
    next_attempt_at = coalesce(outcome.next_attempt_at, message.next_attempt_at),
    last_error = outcome.error,
    claim_token = NULL, lease_expires_at = NULL, updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(statuses)s::varchar[], %(provider_ids)s::varchar[],
            %(next_attempts_at)s::timestamptz[], %(errors)s::text[])
     AS outcome(id, status, provider_id, next_attempt_at, error)
WHERE message.id = outcome.id AND message.status = 'sending' AND message.claim_token = %(claim_token)s
RETURNING message.id
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


def _webhook_url_refusal(*, url: str) -> _Outcome | None:
    """The SSRF guard at send time: the URL was checked when set, but its host may resolve elsewhere now."""
    try:
        outbound_url_check(url=url)
    except OutboundUrlUnresolved as error:
        return _Outcome("retry", error=str(error))
    except OutboundUrlRefused as error:
        return _Outcome("failed", error=f"Not sent: {error}")
    return None


@dataclass(frozen=True)
class _HttpTarget:
    """Where one run's requests go: a keep-alive connection pool to the webhook's host (or to the proxy the
    environment names for it), and what goes on the request line."""

    manager: urllib3.PoolManager  # owns the pool; cleared at the end of the run
    pool: urllib3.HTTPConnectionPool
    request_target: str  # the path and query; the absolute URL through a plain-HTTP proxy
    headers: dict[str, str]  # those of every request, without the per-message ones


def _http_target(*, concurrency: int, url: str) -> _HttpTarget:
    """One pool of up to `concurrency` keep-alive connections for the run (one per sending thread).

    urllib3 directly, not requests (built on it): a requests Session costs about as much CPU per request
    again (environment and cookie merging, hooks, header and URL preparation) as the HTTP itself, and the
    sending threads share one GIL with the run. What requests did for us is kept: proxies from the
    environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY: read once per run), the CA bundle (REQUESTS_CA_BUNDLE,
    CURL_CA_BUNDLE, else certifi's, as requests), no retries below ours (a retry is a new attempt with its
    backoff, counted in the row), redirects never followed.
    """
    options = {
        "num_pools": 1,
        "maxsize": concurrency,
        "block": True,  # never more connections than sending threads
        "retries": False,
        "timeout": urllib3.Timeout(connect=settings.OUTBOUND_HTTP_TIMEOUT_SECONDS, read=settings.OUTBOUND_HTTP_TIMEOUT_SECONDS),
    }
    if url.lower().startswith("https:"):
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or requests.utils.DEFAULT_CA_BUNDLE_PATH
        options["cert_reqs"] = "CERT_REQUIRED"
        options["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    manager = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
    parts = urllib3.util.parse_url(url)
    # A plain-HTTP request through a proxy names the whole URL; HTTPS goes through a CONNECT tunnel.
    request_target = parts._replace(fragment=None).url if proxy and parts.scheme == "http" else parts.request_uri
    pool = manager.connection_from_url(url)
    if not proxy:
        # Connections check the addresses they connect to (SSRF: a name rebound to an internal address between
        # the check before each request and the connection). Through a proxy, the proxy resolves the name.
        pool.ConnectionCls = PublicAddressHTTPSConnection if parts.scheme == "https" else PublicAddressHTTPConnection
    return _HttpTarget(
        manager=manager,
        pool=pool,
        request_target=request_target,
        headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "sociomile-outbound"},
    )


# urllib3's errors (no retries: raised as they happen) that a later attempt may not meet, named as requests
# named them (`last_error` starts with the name). A new connection that failed is a NewConnectionError, which
# urllib3 also makes a ConnectTimeoutError: it is tested first.
_TRANSIENT_ERRORS = (
    (urllib3.exceptions.ReadTimeoutError, "ReadTimeout"),
    (urllib3.exceptions.NewConnectionError, "ConnectionError"),
    (urllib3.exceptions.ConnectTimeoutError, "ConnectTimeout"),
    (urllib3.exceptions.TimeoutError, "Timeout"),
    # A connection reset or closed mid-exchange, TLS and proxy failures.
    ((urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError, urllib3.exceptions.ProxyError), "ConnectionError"),
)


def _post(*, target: _HttpTarget, setting: SchedulerSetting, message: OutboundMessage) -> _Outcome:
    refusal = _webhook_url_refusal(url=setting.webhook_url)
    if refusal is not None:
        return refusal
    body = json.dumps({"to": message.to, "content": message.content}).encode()
    try:
        response = target.pool.urlopen(
            "POST",
            target.request_target,
            body=body,
            headers={**target.headers, "x-ins-auth-key": setting.auth_key, "Idempotency-Key": str(message.id)},
            # A redirected POST may turn into a GET or go elsewhere: a 3xx is answered as it is (a failure).
            redirect=False,
            retries=False,
            assert_same_host=False,
        )
    except OutboundAddressRefused as error:
        return _Outcome("failed", error=f"Not sent: {error}")
    except urllib3.exceptions.HTTPError as error:
        for kinds, name in _TRANSIENT_ERRORS:
            if isinstance(error, kinds):
                return _Outcome("retry", error=f"{name}: {error}")
        # An invalid URL and the like: retrying cannot help.
        return _Outcome("failed", error=f"{error.__class__.__name__}: {error}")
    except ValueError as error:  # http.client refuses the request line or a header value: the same
        return _Outcome("failed", error=f"{error.__class__.__name__}: {error}")

    status = response.status
    data = response.data
    if 200 <= status < 300:
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the decoder's recursion
            payload = None
        provider_id = payload.get("messageId") if isinstance(payload, dict) else None
        if provider_id in (None, "") or isinstance(provider_id, (dict, list, bool)):
            # Accepted, maybe delivered, but unrecorded: never resend it on our own (an operator may retry).
            return _Outcome("failed", error=f"HTTP {status} without a messageId in a JSON body: {_body_start(data)}")
        return _Outcome("sent", message_id=str(provider_id))
    if status == 429 or status >= 500:
        return _Outcome("retry", error=f"HTTP {status}: {_body_start(data)}", retry_after=_retry_after_seconds(response))
    return _Outcome("failed", error=f"HTTP {status}: {_body_start(data)}")


def _body_start(data: bytes) -> str:
    return data[:1200].decode("utf-8", errors="replace")[:300]


def _retry_after_seconds(response: urllib3.BaseHTTPResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:  # absent, or an HTTP date: the backoff alone decides
        return None


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
    """One UPDATE for the rows; the ids written (those whose claim is still ours)."""
    # Inside a caller's transaction (tests, a shell), a savepoint keeps a refused statement from breaking it;
    # a run in autocommit needs none, and pays no extra round trip.
    guard = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(
            _OUTCOMES_RECORD,
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
        return {row[0] for row in cursor.fetchall()}


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
_CACHE_SET_SCRIPT = """
for index, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[index + 1], 'EX', ARGV[1])
end
return #KEYS
"""


def _cache_sent(*, sent: dict[uuid.UUID, str], sent_at: datetime) -> None:
    # The row is the record; the cache is a convenience for readers, so a Redis outage only logs.
    if not sent:
        return
    schema_name = _tenant_schema_name()
    sent_at_text = sent_at.isoformat()
    try:
        redis_script(_CACHE_SET_SCRIPT)(
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
    that arrived while the previous one committed, then one Redis pipeline for the sent ones. Messages
    claimed but not yet tried when the run is interrupted are released at once.
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

    concurrency = max(1, min(settings.OUTBOUND_SEND_CONCURRENCY, setting.batch_size))
    # Before the claim: a pool that cannot be made (an unusable proxy setting) leaves every message pending.
    target = _http_target(concurrency=concurrency, url=setting.webhook_url)
    claim_token = uuid.uuid4()
    claimed = outbound_claim_due(batch_size=setting.batch_size, claim_token=claim_token, now=now)
    if not claimed:
        return summary
    # The claim's leases are renewed while the run goes on, so they only have to outlast one request and
    # this interval, however long the batch takes.
    renew_every = settings.OUTBOUND_LEASE_SECONDS / 4
    answers: queue.SimpleQueue = queue.SimpleQueue()
    futures: dict[uuid.UUID, Future] = {}
    written: dict[uuid.UUID, str] = {}
    schema_name = _tenant_schema_name()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"outbound-{schema_name}")

    def send(message: OutboundMessage) -> None:
        # The thread's own (never opened) connection names the tenant too: log lines from here carry it.
        with schema_context(schema_name):
            try:
                outcome = _post(target=target, setting=setting, message=message)
            except Exception as error:  # a bug here must not leave the run waiting for an answer forever
                logger.exception("outbound %s: sending failed unexpectedly", message.id)
                outcome = _Outcome("retry", error=f"{error.__class__.__name__}: {error}")
        answers.put((message, outcome, message.attempts))

    try:
        for message in claimed:  # oldest first; the pool starts them in this order
            futures[message.id] = pool.submit(send, message)
        unanswered = len(claimed)
        renewed_at = time.monotonic()
        while unanswered:
            results = []
            try:
                results.append(answers.get(timeout=max(0.0, renewed_at + renew_every - time.monotonic())))
                while not answers.empty():
                    results.append(answers.get())
            except queue.Empty:
                pass
            unanswered -= len(results)
            if time.monotonic() >= renewed_at + renew_every:
                _claim_renew(claim_token=claim_token)
                renewed_at = time.monotonic()
            recorded_at = timezone.now()
            recorded = _outcomes_record(claim_token=claim_token, results=results, now=recorded_at)
            written.update({message_id: status for message_id, (status, _) in recorded.items()})
            _cache_sent(
                sent={message_id: provider_id for message_id, (status, provider_id) in recorded.items() if status == "sent"},
                sent_at=recorded_at,
            )
    finally:
        # Interrupted (soft time limit, shutdown): requests in flight finish or time out on their own and
        # keep their lease (they may have arrived); what never started is handed back at once.
        pool.shutdown(wait=False, cancel_futures=True)
        target.manager.clear()
        untried = [message.id for message in claimed if message.id not in futures or futures[message.id].cancelled()]
        if untried:
            with connection.cursor() as cursor:
                cursor.execute(_UNTRIED_RELEASE, {"ids": untried, "claim_token": claim_token})
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
