from django.db import connection

from scheduler.services import outbound_run_is_due, outbound_send_due, outbound_work_settle, outbound_work_version
from sociomile.celery import app
from tenants.metrics import tenant_deliveries_count


@app.task(ignore_result=True)
def outbound_send_due_task() -> None:
    """One run of the tenant's outbound job, sent by the dispatcher when the tenant's `outbound` mark comes
    due (tenants.work), in the tenant's schema and on its queue.

    Idempotent: a redelivered or duplicated run claims only what is still due, and never a message another
    run holds. A run that comes before the job's run time, or while it is stopped, sends nothing. At its
    end the mark is settled: moved to the next run time while something is left to send, else removed.
    """
    version = outbound_work_version()
    if outbound_run_is_due():
        summary = outbound_send_due()
        tenant_deliveries_count(
            schema_name=connection.schema_name, channel="outbound",
            outcomes={"sent": len(summary.sent), "retrying": len(summary.retrying), "failed": len(summary.failed)},
        )  # fmt: skip
    outbound_work_settle(version=version)
