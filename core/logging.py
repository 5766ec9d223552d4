"""Log context: the request id of the request being served, carried to the tasks it enqueues, and the JSON
line format (`LOG_FORMAT=json`, sociomile/settings/logs.py).

One id follows a piece of work from the web to the worker: `RequestIdMiddleware` takes it from the incoming
`X-Request-ID` when it is sane, or makes one, and returns it in the response; every task published while it is
set carries it in a message header (`task_publish_request_id_add`, Celery's before_task_publish); the worker
sets it again while that task runs (`task_request_id_bind` / `task_request_id_clear`), so the task's own log
lines, and the tasks it sends in turn, carry the same id. A contextvar, so threads (gunicorn's gthread
workers) and asyncio tasks each see their own.
"""

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

from django.db import connection

# The header's name in the task message. Prefixed: Celery puts a message's headers beside its own request
# fields (id, retries, eta...), so a plain name could shadow one of them.
TASK_HEADER = "sociomile_request_id"

# What an incoming X-Request-ID may be: proxies and clients send UUIDs, hex or base64 ids, or
# "<host>/<trace>-<n>" forms. Anything else (a NUL, a newline that would forge a log line in the text
# format, 10 kB meant to bloat every line of the request) is replaced by an id of ours, not escaped.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("sociomile_request_id", default=None)


def request_id_choose(incoming: str | None) -> str:
    """The incoming id when it is sane, else a new one (32 hex digits)."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def request_id_get() -> str | None:
    return request_id_var.get()


# --- Celery signal handlers (connected in sociomile/celery.py) ------------------------------------------


def task_publish_request_id_add(headers=None, **kwargs) -> None:
    """before_task_publish: a task sent while a request id is set carries it (web or worker alike)."""
    request_id = request_id_var.get()
    if request_id is not None and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


# The token of each running task's binding, by task id, so postrun restores what was there before (a task
# run eagerly inside a request must not clear the request's id).
_task_tokens: dict[str, object] = {}


def task_request_id_bind(task_id=None, task=None, **kwargs) -> None:
    """task_prerun: the task's log lines, and the tasks it sends, carry the id of the request that sent it."""
    request_id = _task_header(task, TASK_HEADER)
    if request_id is not None and task_id is not None:
        _task_tokens[task_id] = request_id_var.set(request_id_choose(str(request_id)))


def task_request_id_clear(task_id=None, **kwargs) -> None:
    """task_postrun: a worker process's next task starts without the previous one's request id."""
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        request_id_var.reset(token)


def _task_header(task, name: str):
    request = getattr(task, "request", None)
    if request is None:
        return None
    # Celery places a message's custom headers beside its request fields; some transports keep them in
    # `headers` instead (as tenant_schemas_celery also checks for its schema header).
    value = request.get(name) if hasattr(request, "get") else None
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


def _current_task():
    from celery import current_task

    task = current_task
    # current_task is a proxy: falsy (its __bool__ follows the object) when no task is running.
    return task if task and getattr(task, "request", None) is not None and task.request.id else None


# --- logging ----------------------------------------------------------------------------------------------


class LogContextFilter(logging.Filter):
    """Adds the context of the line to each record: tenant (the connection's schema), request_id, task_id,
    task_name. Empty strings when there is none, so the text format never fails on a missing field."""

    def filter(self, record: logging.LogRecord) -> bool:
        tenant = getattr(connection, "tenant", None)
        record.tenant = getattr(tenant, "schema_name", None) or getattr(connection, "schema_name", "") or ""
        record.schema_name = record.tenant  # the text format's name for it (django-tenants' filter)
        task = _current_task()
        record.task_id = task.request.id if task is not None else ""
        record.task_name = task.name if task is not None else ""
        request_id = request_id_var.get()
        if request_id is None and task is not None:
            request_id = _task_header(task, TASK_HEADER)
        record.request_id = request_id or ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, tenant, request_id, task_id,
    task_name (the last three only when set), exception (its formatted traceback) when there is one, and the
    `extra=` fields a call passed (event fields such as the access line's status). json.dumps escapes
    newlines and control characters, so a message can never break the one-line-per-event rule."""

    # Attributes every LogRecord has (and those LogContextFilter adds): the rest came from `extra=`.
    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
        "message", "asctime", "tenant", "schema_name", "domain_url", "request_id", "task_id", "task_name",
    }  # fmt: skip

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "tenant": getattr(record, "tenant", "") or None,
        }
        for field in ("request_id", "task_id", "task_name"):
            value = getattr(record, field, "")
            if value:
                line[field] = value
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)

    def formatTime(self, record, datefmt=None) -> str:  # noqa: N802 (logging's name)
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
