"""Scheduling assignment runs: at most one queued run per tenant, sent after the change commits, with the
tenant's assignment work marked in the same transaction (the safety net if the run is lost)."""

from contextvars import ContextVar

from django.db import connection, transaction
from django_tenants.utils import schema_context

from core.redis import get_redis, tenant_key
from tenants.models import TenantWork
from tenants.work import tenant_work_mark, tenant_work_soon

# A run that was scheduled but has not started within this many seconds is assumed lost: the next event
# schedules another (and the dispatcher sends one once the tenant's mark comes due).
_SCHEDULED_TTL_SECONDS = 30


# Set by assignment.assignment_runs_deferred (the drain): the current tenant's runs are run by that caller
# instead of being sent as tasks.
deferred_runs: ContextVar = ContextVar("assignment_runs_deferred", default=None)


def _scheduled_key() -> str:
    return tenant_key(connection.schema_name, "assignment", "scheduled")


def _assignment_run_schedule(schema_name: str) -> None:
    from agents.tasks import assignment_run_task
    from tenants.queues import task_wake

    with schema_context(schema_name):
        # One queued run is enough: it reads the state when it starts, after everything committed before
        # this point. The run clears the flag first thing, so events after that schedule another.
        if get_redis().set(_scheduled_key(), 1, nx=True, ex=_SCHEDULED_TTL_SECONDS):
            task_wake(assignment_run_task)  # the chats wait in the table; the sweep runs it if the broker is away


def assignment_schedule() -> None:
    """Runs the assignment for this tenant once the current transaction commits (at most one queued run).

    Also marks the tenant's assignment work, in the current transaction: the run settles it, and if the
    run is never sent or lost, the dispatcher sends one TENANT_WORK_GRACE_SECONDS later.
    """
    schema_name = connection.schema_name
    tenant_work_mark(kind=TenantWork.Kind.ASSIGNMENT, due_at=tenant_work_soon())
    deferred = deferred_runs.get()
    if deferred is not None and deferred.schema_name == schema_name:
        transaction.on_commit(deferred.want)  # the caller runs it (assignment.assignment_runs_deferred)
        return
    transaction.on_commit(lambda: _assignment_run_schedule(schema_name))


def assignment_scheduled_clear() -> None:
    get_redis().delete(_scheduled_key())
