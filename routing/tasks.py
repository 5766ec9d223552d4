from routing.sla import sla_breaches_check
from sociomile.celery import app


@app.task
def sla_breaches_check_task() -> None:
    """Records the tenant's SLA breaches that have come due and moves its `sla` mark to the next due time.

    Sent by the dispatcher (tenants.work, kind `sla`) when the mark is due. Idempotent: a breach is recorded
    once whatever runs at the same time or again (routing.sla.sla_breaches_record).
    """
    sla_breaches_check()
