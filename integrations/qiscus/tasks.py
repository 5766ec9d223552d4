"""Qiscus' tasks. Registered under their names from before the adapter left agents/ (`name=`), so that a
message queued by the old code still finds its task; rename them only once no such message can be left."""

import requests
from django.conf import settings
from django.db import OperationalError

from integrations.qiscus.services import (
    QiscusChatNotPersisted,
    QiscusTransientError,
    qiscus_agent_assign,
    qiscus_queued_chat_resolve,
)
from sociomile.celery import app


@app.task(
    name="agents.tasks.qiscus_assign_agent_task",
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
    name="agents.tasks.qiscus_room_resolve_task",
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
