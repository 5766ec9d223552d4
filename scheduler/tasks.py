from scheduler.services import outbound_send_due
from sociomile.celery import app


@app.task(ignore_result=True)
def outbound_send_due_task() -> None:
    """One run of the tenant's outbound job, started by celery-beat through the tenant's PeriodicTask.

    Runs in the tenant's schema (the `_schema_name` header of the PeriodicTask). Idempotent: a redelivered
    or duplicated run claims only what is still due, and never a message another run holds.
    """
    outbound_send_due()
