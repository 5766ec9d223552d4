"""Structured logs (core/logging.py): the request id from the web request to the tasks it enqueues, hostile
X-Request-ID values replaced, the JSON line format."""

import io
import json
import logging
import sys
import time
import uuid

import pytest

from core.logging import JsonFormatter, LogContextFilter, request_id_var
from core.models import User
from core.tests.fixtures.workers import WorkerProcess
from core.tests.support import api_client, make_user, token_for


def _json_handler(logger: logging.Logger) -> tuple[io.StringIO, logging.Handler]:
    """A handler writing the logger's lines to a string in the JSON format, added to it (remove it after)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LogContextFilter())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return stream, handler


@pytest.fixture
def access_lines():
    """The `sociomile.access` lines of this test process, in the JSON format (LOG_ACCESS on for the test)."""
    logger = logging.getLogger("sociomile.access")
    level = logger.level
    stream, handler = _json_handler(logger)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(level)


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # Celery's banner and anything printed before logging is configured
    return lines


@pytest.mark.worker
def test_request_id_reaches_the_log_line_of_the_task_the_request_enqueued(make_live_tenant, access_lines):
    # given a worker writing JSON lines, and a tenant
    worker = WorkerProcess(name=f"json-{uuid.uuid4().hex[:6]}", concurrency=1, extra_env={"LOG_FORMAT": "json"})
    try:
        tenant = make_live_tenant("logs")
        platform = api_client(token=token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None))

        # when requests with their own X-Request-ID enqueue a task each (other workers of the session may take
        # some of them: each request has its id, and one task run by this worker is enough)
        sent: dict[str, int] = {}
        found = None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            request_id = f"req-{uuid.uuid4().hex[:12]}"
            response = platform.post(f"/api/tenants/{tenant.id}/messages", {"payload": {"n": len(sent)}},
                                     HTTP_X_REQUEST_ID=request_id)  # fmt: skip
            assert response.status_code == 202
            assert response["X-Request-ID"] == request_id
            sent[request_id] = response.json()["id"]
            for _ in range(20):
                task_lines = [line for line in _json_lines(worker.log()) if line.get("request_id") in sent]
                if task_lines:
                    found = task_lines[0]
                    break
                time.sleep(0.1)
    finally:
        worker.stop()

    # then the worker's line of that task carries the request's id, its task id and name, and the tenant
    assert found is not None, f"no line of the worker carried a request id; its log:\n{worker.log()[-3000:]}"
    assert found["tenant"] == tenant.schema_name
    assert found["task_name"] == "conversations.tasks.inbound_event_record_task"
    assert len(found["task_id"]) == 36
    assert found["level"] == "INFO" and found["logger"] == "celery.app.trace"
    # and the request's own line carries the same id, with its tenant (the platform: public) and outcome
    request_line = next(line for line in access_lines() if line["request_id"] == found["request_id"])
    assert request_line["status"] == 202
    assert request_line["path"] == f"/api/tenants/{tenant.id}/messages"
    assert request_line["logger"] == "sociomile.access"
    # and no id leaks past its request: nothing is bound in this thread now
    assert request_id_var.get() is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "hostile", ["abc\x00def", "x" * 10_000, "abc\ninjected=1", "abc\r\nSet-Cookie: a=b", "", "ümlaut", "a b"]
)
def test_an_insane_x_request_id_is_replaced_by_a_new_one(client, hostile):
    response = client.get("/health", HTTP_X_REQUEST_ID=hostile)

    returned = response["X-Request-ID"]
    assert returned != hostile
    assert len(returned) == 32 and int(returned, 16) >= 0


@pytest.mark.django_db
def test_a_sane_x_request_id_is_kept_and_an_absent_one_made(client):
    kept = client.get("/health", HTTP_X_REQUEST_ID="b7e1c1a0-5f1e-4c8e-9d0a-0f6c2f7f9a11")
    made = [client.get("/health")["X-Request-ID"] for _ in range(2)]

    assert kept["X-Request-ID"] == "b7e1c1a0-5f1e-4c8e-9d0a-0f6c2f7f9a11"
    assert made[0] != made[1] and all(len(value) == 32 for value in made)


def test_json_line_holds_the_context_and_the_exception_on_one_line():
    # given a line written inside a request's id, with an exception and a newline in its message
    logger = logging.getLogger("sociomile.test_logging")
    stream, handler = _json_handler(logger)
    logger.propagate = False
    token = request_id_var.set("req-1")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.error("failed\nsecond line", exc_info=True, extra={"chat": 7})
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
        logger.propagate = True

    # then it is one JSON object on one line, with every field
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["message"] == "failed\nsecond line"
    assert (line["level"], line["logger"], line["request_id"], line["chat"]) == ("ERROR", "sociomile.test_logging", "req-1", 7)
    assert line["tenant"] == "public"
    assert line["exception"].startswith("Traceback") and "ValueError: boom" in line["exception"]
    assert line["time"].endswith("+00:00")
    assert "task_id" not in line
    assert sys.exc_info() == (None, None, None)
