"""Helpers every app's tests use: API clients per host, users and tokens, polling. Plain functions, imported
by test modules (fixtures are in core/tests/fixtures/, registered by the root conftest.py)."""

import contextlib
import json
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django_tenants.utils import get_public_schema_name, schema_context
from rest_framework.test import APIClient

from core.models import User
from core.services import user_create, user_token_get_or_create
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parents[2]
TEST_OUTPUT = ROOT / "test-output"
PASSWORD = "test-password-1234"


def wait_for(predicate, *, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    """Polls until predicate() is truthy and returns its value; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def host_of(tenant: Tenant | None) -> str:
    return settings.BASE_DOMAIN if tenant is None else f"{tenant.schema_name}.{settings.BASE_DOMAIN}"


def api_client(*, tenant: Tenant | None = None, token: str | None = None) -> APIClient:
    """A DRF test client speaking JSON to the platform host (tenant=None) or to a tenant's host."""
    client = APIClient(HTTP_HOST=host_of(tenant))
    client.default_format = "json"
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def make_user(*, tenant: Tenant | None, role: str, email: str | None = None) -> User:
    schema = get_public_schema_name() if tenant is None else tenant.schema_name
    with schema_context(schema):
        return user_create(email=email or f"{role}-{uuid.uuid4().hex[:8]}@example.test", password=PASSWORD, role=role)


def token_for(user: User, *, tenant: Tenant | None) -> str:
    schema = get_public_schema_name() if tenant is None else tenant.schema_name
    with schema_context(schema):
        return user_token_get_or_create(user=user).key


@contextlib.contextmanager
def plans_of(marker: str, *, settings: str = "", first_only: bool = False):
    """Inside the block, every statement whose SQL contains `marker` (or only the first, `first_only`) is also
    EXPLAIN (ANALYZE, BUFFERS)ed, after `settings` (e.g. "SET LOCAL enable_hashjoin = off"), in a savepoint that
    rolls the explained run back; the statement then runs as usual. Yields a list that holds each explained
    plan's nodes, flattened, once the block ends; a test sums e.g. their "Shared Hit Blocks" (counted in
    buffers, not timed: the same plan reads the same pages on any machine)."""
    from django.db import connection

    plans: list[list[dict]] = []

    def flatten(plan: dict):
        yield plan
        for child in plan.get("Plans", []):
            yield from flatten(child)

    def explain(execute, sql, params, many, context):
        if marker in sql and not (first_only and plans):
            raw = context["cursor"].cursor
            raw.execute("SAVEPOINT plan")
            if settings:
                raw.execute(settings)
            raw.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
            plan = raw.fetchone()[0]
            plan = plan if isinstance(plan, list) else json.loads(plan)
            plans.append(list(flatten(plan[0]["Plan"])))
            raw.execute("ROLLBACK TO SAVEPOINT plan")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield plans


@contextlib.contextmanager
def nested_loop_plan_of(marker: str):
    """The first statement whose SQL contains `marker`, explained as plans_of does with hash and merge joins off:
    what the planner picks when its statistics say one side holds one row. Yields the list of its plan's nodes;
    a test sums e.g. their "Rows Removed by Join Filter"."""
    nodes: list[dict] = []
    with plans_of(marker, settings="SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off", first_only=True) as plans:
        yield nodes
    nodes.extend(plans[0] if plans else [])


@contextlib.contextmanager
def postgres_round_trips():
    """Counts the times this process waited for PostgreSQL's answer (`.count`), on any psycopg connection.

    psycopg runs each exchange with the server as a generator that yields when it needs the socket; a yield for
    reading only (not while sending too) is the client waiting for an answer it does not have: a statement's
    results, a pipeline's sync, COMMIT's answer. Outside a pipeline, each statement counts at least once; inside
    one (core.prepared.pipelined), each read or sync whose answers were not all in yet counts once, so the
    count is about the block's sync points (answers that arrived while later statements were sent cost
    none; one that arrives in pieces can cost two), so tests bound it with a little room. Counted, not timed: a round trip costs little on an idle machine and two wake-ups of busy
    processes on a loaded one (issue 18), so what a path costs is told by how many it makes."""
    from psycopg import Connection
    from psycopg.waiting import Wait

    class Count:
        count = 0

    counted = Count()
    original = Connection.wait

    def counting(gen):
        try:
            waiting_for = next(gen)
            while True:
                if waiting_for == Wait.R:
                    counted.count += 1
                ready = yield waiting_for
                waiting_for = gen.send(ready)
        except StopIteration as stop:
            return stop.value

    def wait(self, gen, *args, **kwargs):
        return original(self, counting(gen), *args, **kwargs)

    Connection.wait = wait
    try:
        yield counted
    finally:
        Connection.wait = original
