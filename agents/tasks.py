from django.db import OperationalError

from agents.services import (
    assignment_run,
    assignment_scheduled_clear,
    assignment_sweep,
    assignment_work_settle,
    assignment_work_version,
)
from sociomile.celery import app


# A run is idempotent, so a transient database error (a dropped connection, a deadlock victim) is retried;
# the tenant's assignment mark (tenants.work) catches anything that still slips through: it stays until a
# run settles it.
@app.task(autoretry_for=(OperationalError,), retry_backoff=1, retry_jitter=True, max_retries=3)
def assignment_run_task() -> int:
    """Assigns the tenant's waiting chats to its eligible agents (idempotent: a run with nothing to do
    writes nothing). Sent after any change that can make an assignment possible."""
    # Cleared before the run reads anything: an event committed from here on schedules another run.
    assignment_scheduled_clear()
    return assignment_run(settle=True)


@app.task
def assignment_sweep_task() -> int:
    """The tenant's assignment work as the dispatcher sends it (tenants.work): Agent rows for all staff,
    active chats recounted, reply timeouts, a run; then the mark is settled. Only tenants with a due
    assignment mark get it: chats waiting, a reply deadline, or a run whose task was lost."""
    version = assignment_work_version()
    assigned = assignment_sweep()
    assignment_work_settle(version=version)
    return assigned
