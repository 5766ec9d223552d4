"""The outbound job's setting and its schedule in the due-work index (tenants.work): start, stop, update,
and where the tenant's `outbound` mark goes."""

import logging
import uuid
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from audit.services import audit_record
from core.redis import tenant_key
from core.text import visible_ascii_validator
from scheduler.models import SchedulerSetting
from scheduler.selectors import scheduler_first_run_at, scheduler_next_run_at
from tenants.models import TenantWork
from tenants.work import tenant_work_clear, tenant_work_mark, tenant_work_settle, tenant_work_version

logger = logging.getLogger(__name__)


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
        audit_record(action="scheduler.started", target="scheduler")
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
            audit_record(action="scheduler.stopped", target="scheduler")
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
        audit_record(action="scheduler.updated", target="scheduler", changes={name: changes[name] for name in changed if name in changes}, skip_if_unchanged=True)
    return setting
