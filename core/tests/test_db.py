"""The search path is set once per schema change, and never trusted after a rollback undid it; a backend whose
client was killed lets go of its locks."""

import json
import os
import signal
import subprocess
import sys

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from core.models import User
from core.tests.support import wait_for


def _search_path() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        return cursor.fetchone()[0]


def test_search_path_is_set_once_per_schema_change(tenant_a):
    with schema_context(tenant_a.schema_name), CaptureQueriesContext(connection) as queries:
        User.objects.count()
        User.objects.count()
        User.objects.count()

    sets = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SET search_path")]
    assert len(sets) == 1


def test_a_savepoint_rollback_that_undid_the_search_path_is_noticed(tenant_a, tenant_b):
    # given a connection on tenant B's path, switched to A inside a savepoint that is rolled back
    with schema_context(tenant_b.schema_name):
        assert _search_path().startswith(f'"{tenant_b.schema_name}"') or _search_path().startswith(tenant_b.schema_name)
        with schema_context(tenant_a.schema_name):
            try:
                with transaction.atomic():
                    assert tenant_a.schema_name in _search_path()  # the SET happened inside the savepoint
                    raise RuntimeError("roll the savepoint back")
            except RuntimeError:
                pass
            # PostgreSQL undid the SET; the next query must set it again rather than read B's tables
            assert _search_path().split(",")[0].strip('"') == tenant_a.schema_name


_HOLD_A_LOCK_AND_SLEEP = """
import json, sys, psycopg
with psycopg.connect(**json.loads(sys.argv[1])) as conn:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [int(sys.argv[2])])
    print("locked", flush=True)
    conn.execute("SELECT pg_sleep(120)")
"""


def test_a_backend_whose_client_was_killed_mid_statement_rolls_back_and_lets_go_of_its_locks(db):
    """A worker SIGKILLed mid-statement, or a task whose time limit was raised inside a query (the process then
    drops the connection), left its backend running the statement to its end with every lock it held: a drain
    batch blocked behind a lock kept the next drain queued behind its uncommitted rows as long. With the
    settings' client_connection_check_interval, PostgreSQL notices the client is gone and rolls back."""
    params = connection.get_connection_params()
    conninfo = {key: params[key] for key in ("dbname", "user", "password", "host", "port", "options") if params.get(key)}
    key = int.from_bytes(os.urandom(4), "big") >> 1
    # given a client that holds a lock in a transaction and is in the middle of a long statement
    child = subprocess.Popen([sys.executable, "-c", _HOLD_A_LOCK_AND_SLEEP, json.dumps(conninfo), str(key)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "locked"
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
            assert cursor.fetchone()[0] is False
            # when the client is SIGKILLed
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)

            # then its backend rolls back within the check interval, not after the statement's 120 s
            def taken() -> bool:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
                return cursor.fetchone()[0]

            wait_for(taken, timeout=20, message="the killed client's lock to be released")
    finally:
        child.kill()
        child.wait(timeout=10)
