"""Prepared statements for the hot path: a statement planned once per connection and schema, not at every run.

A drain turn runs ~25 statements whatever its batch's size, and under tenant_scale's load PostgreSQL spent more
time planning them than running them (pg_stat_statements over the bench's load: planning 55 % of the product's
statement time; the events and rollup CTEs 1.2-1.8 ms of planning each, per turn). `prepared_cursor()` gives a
cursor that binds parameters on the server and prepares each statement on first use, so later turns on the
same connection reuse the parse and, once PostgreSQL settles on its generic plan, the plan.

Tenants: a plan holds the tables its search_path resolved. PostgreSQL re-analyzes a prepared statement run under
another search_path (correct, but planned again), and a worker's connection serves many tenants in turn; so the
statement text carries the schema's name in a comment, and each (schema, statement) is prepared on its own and
always runs under the search_path it was planned for. psycopg keeps at most DATABASE_PREPARED_MAX per
connection (least recently used deallocated), which bounds a backend's memory whatever the number of tenants.

Parameters are bound on the server, so the SQL must type them where PostgreSQL cannot infer a type (casts such as
`%s::bigint[]`, as the hot statements already have). Utility statements without parameters (a SAVEPOINT, the
SETs a test's EXPLAIN wrapper sends) run as they are, unprepared. Not for a connection pooler in transaction mode, where
a session's prepared statements are not the next transaction's: Sociomile connects to PostgreSQL directly.
"""

import re

import psycopg
from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

# Statements PostgreSQL plans; any other without parameters (a SAVEPOINT, a SET, several statements in one
# string) runs unprepared.
_PLANNED = re.compile(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)

# psycopg prepares on `prepare=True` only while its threshold is set; ours never prepares on a count (Django's
# own client-binding cursors never prepare at all), so the threshold is out of reach.
_NEVER_BY_COUNT = 2**31


class _PreparingCursor(psycopg.Cursor):
    """psycopg's server-binding cursor, preparing every statement that has parameters under its schema's tag."""

    schema_name = ""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        if params is None and not _PLANNED.match(query):
            return super().execute(query, params, prepare=False, binary=binary)
        return super().execute(f"/* {self.schema_name} */ {query}", params, prepare=True, binary=binary)


class _PreparedDebugWrapper(CursorDebugWrapper):
    """Django's query log (DEBUG, tests' CaptureQueriesContext) reads the SQL a client-binding cursor sent; a
    prepared statement has none, so the log gets the statement with its parameters composed as Django's would."""

    def execute(self, sql, params=None):
        logged = sql if params is None else self.db.ops.compose_sql(sql, params)
        with self.debug_sql(logged, params):
            return CursorWrapper.execute(self, sql, params)


def prepared_cursor():
    """A cursor of the default connection, in the current tenant's schema, that prepares its statements; use it
    like `connection.cursor()` (a context manager). Through Django's cursor wrapper: database errors become
    django.db's, execute wrappers and the query log (tests) see every statement."""
    with connection.cursor() as tenant_cursor:  # connects, and sets the tenant's search_path if it changed
        raw = tenant_cursor.cursor.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _NEVER_BY_COUNT
        raw.prepared_max = settings.DATABASE_PREPARED_MAX
    cursor = _PreparingCursor(raw)
    cursor.schema_name = connection.schema_name
    return _PreparedDebugWrapper(cursor, connection) if connection.queries_logged else connection.make_cursor(cursor)
