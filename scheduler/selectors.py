import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from scheduler.models import OutboundMessage, SchedulerSetting


@dataclass(frozen=True)
class SchedulerState:
    running: bool
    interval_seconds: int
    batch_size: int
    webhook_url: str
    last_run_at: datetime | None
    next_run_at: datetime | None


def scheduler_setting_get() -> SchedulerSetting:
    """The tenant's setting; an unsaved one with the defaults if provisioning has not made it yet."""
    return SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).first() or SchedulerSetting()


def scheduler_next_run_at(*, setting: SchedulerSetting, after: datetime) -> datetime:
    """The job's first run time at or after `after`: run times are one interval apart, counted from the last
    run, or from when the schedule began (creation, start, interval change) if there was no run since.

    The job runs only at run times when the tenant has something to send (tenants.work); a run time with
    nothing to send passes without a run, and the count goes on from the last real run.
    """
    first = scheduler_first_run_at(setting=setting)
    interval = timedelta(seconds=setting.interval_seconds)
    return first + max(0, math.ceil((after - first) / interval)) * interval


def scheduler_first_run_at(*, setting: SchedulerSetting) -> datetime:
    """One interval after the last run, or after the schedule began if there was no run since: from then on
    a run may go."""
    last = setting.last_run_at
    base = last if last is not None and last > setting.schedule_anchor_at else setting.schedule_anchor_at
    return base + timedelta(seconds=setting.interval_seconds)


def scheduler_state_get(*, setting: SchedulerSetting | None = None, now: datetime | None = None) -> SchedulerState:
    """What the API shows: the setting, and the next run time (None while stopped).

    `last_run_at` is the last run that happened; `next_run_at` the next run time from now, when a run goes
    if a message is pending by then (one interval after the last run or start, or the first run time after
    that which is still ahead).
    """
    setting = setting or scheduler_setting_get()
    next_run_at = None
    if setting.running:
        next_run_at = scheduler_next_run_at(setting=setting, after=now or timezone.now())
    return SchedulerState(
        running=setting.running,
        interval_seconds=setting.interval_seconds,
        batch_size=setting.batch_size,
        webhook_url=setting.webhook_url,
        last_run_at=setting.last_run_at,
        next_run_at=next_run_at,
    )


def outbound_message_list(*, status: str | None = None) -> QuerySet[OutboundMessage]:
    messages = OutboundMessage.objects.all()
    if status:
        messages = messages.filter(status=status)
    return messages


def outbound_message_get(*, message_id) -> OutboundMessage | None:
    return OutboundMessage.objects.filter(id=message_id).first()
