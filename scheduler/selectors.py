from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet

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


def scheduler_state_get(*, setting: SchedulerSetting | None = None) -> SchedulerState:
    """What the API shows: the setting, and when beat will start the next run.

    Beat runs the job one interval after its last run, or after the schedule began (start, interval
    change) if it has not run since: the same arithmetic here. Stopped: no next run.
    """
    setting = setting or scheduler_setting_get()
    next_run_at = None
    if setting.running:
        last = setting.last_run_at
        anchor = last if last is not None and last > setting.schedule_anchor_at else setting.schedule_anchor_at
        next_run_at = anchor + timedelta(seconds=setting.interval_seconds)
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
