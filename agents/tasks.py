import requests
from django.conf import settings
from django.db import OperationalError

from agents.services import (
    QiscusChatNotPersisted,
    QiscusTransientError,
    assignment_run,
    assignment_scheduled_clear,
    assignment_sweep,
    assignment_work_settle,
    assignment_work_version,
    qiscus_agent_assign,
    qiscus_queued_chat_resolve,
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
    version = assignment_work_version()
    assigned = assignment_run()
    assignment_work_settle(version=version)
    return assigned


@app.task
def assignment_sweep_task() -> int:
    """The tenant's assignment work as the dispatcher sends it (tenants.work): Agent rows for all staff,
    active chats recounted, reply timeouts, a run; then the mark is settled. Only tenants with a due
    assignment mark get it: chats waiting, a reply deadline, or a run whose task was lost."""
    version = assignment_work_version()
    assigned = assignment_sweep()
    assignment_work_settle(version=version)
    return assigned


@app.task(
    autoretry_for=(QiscusTransientError, requests.ConnectionError, requests.Timeout),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=settings.QISCUS_MAX_RETRIES,
)
def qiscus_assign_agent_task(chat_id: int, agent_id: int) -> bool:
    """Mirrors one assignment of a Qiscus room into Qiscus (assign_agent). Idempotent: it re-reads the
    chat and sends nothing if the chat has moved on; Qiscus' 429/5xx and network errors are retried with
    exponential backoff and jitter, a bounded number of times."""
    return qiscus_agent_assign(chat_id=chat_id, agent_id=agent_id)


# Retried until the drain has persisted the chat: about 1, 2, 4 ... 30 s apart, for about half an hour, which
# covers a drain held up by a database outage; after that the chat is logged as left unresolved.
@app.task(
    autoretry_for=(QiscusChatNotPersisted, OperationalError),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=70,
)
def qiscus_room_resolve_task(room_id: str, chat_number: int) -> str:
    """Resolves a Qiscus room's chat that Qiscus marked resolved before it was persisted (idempotent: an
    already resolved chat is left as it is). Retries until the chat's row exists."""
    return qiscus_queued_chat_resolve(room_id=room_id, chat_number=chat_number).status
