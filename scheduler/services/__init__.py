"""The outbound scheduler's services: the job's setting and schedule (`schedule`), the messages
(`messages`), one run of the job (`run`). The HTTP delivery itself is `core.transport`, shared with the
event webhooks."""

from scheduler.services.messages import outbound_message_create, outbound_message_retry
from scheduler.services.run import (
    OutboundRunSummary,
    outbound_claim_due,
    outbound_recover_expired,
    outbound_retry_delay,
    outbound_send_due,
)
from scheduler.services.schedule import (
    outbound_cache_key,
    outbound_run_is_due,
    outbound_work_settle,
    outbound_work_version,
    scheduler_ensure,
    scheduler_start,
    scheduler_stop,
    scheduler_update,
)

__all__ = [
    "OutboundRunSummary",
    "outbound_cache_key",
    "outbound_claim_due",
    "outbound_message_create",
    "outbound_message_retry",
    "outbound_recover_expired",
    "outbound_retry_delay",
    "outbound_run_is_due",
    "outbound_send_due",
    "outbound_work_settle",
    "outbound_work_version",
    "scheduler_ensure",
    "scheduler_start",
    "scheduler_stop",
    "scheduler_update",
]
