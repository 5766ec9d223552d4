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
from contextlib import contextmanager
from contextvars import ContextVar

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


class _AnswerOwnStatement:
    """A cursor that, in pipeline mode (`pipelined()`), reads the answer of its own last statement.

    psycopg hands each answer to the cursor that sent the statement when the answer arrives, and a fetch waits
    only if the cursor holds no answer yet. So a cursor that sent two statements (an UPDATE, then a SELECT) and
    then fetched could read the UPDATE's answer, if it had arrived by then, and `rowcount` right after a
    statement is -1 until its answer arrives (Django's QuerySet.update() returns it). Seen under load: the
    drain's fetch of its inserted messages got "the last operation didn't produce records (UPDATE 1)". This
    mixin syncs first whenever the cursor's own last answer may not be the one it holds. Outside pipeline mode
    every statement waits for its answer anyway, and this costs nothing."""

    _unanswered = 0

    def execute(self, *args, **kwargs):
        self._unanswered += 1
        return super().execute(*args, **kwargs)

    def _own_answer(self) -> None:
        pipeline = _pipeline.get()
        if self._unanswered and pipeline is not None and (self._unanswered > 1 or self.pgresult is None):
            pipeline.sync()  # one round trip: every answer sent for is in, each with its cursor, in order
        self._unanswered = 0

    def fetchone(self):
        self._own_answer()
        return super().fetchone()

    def fetchmany(self, size=0):
        self._own_answer()
        return super().fetchmany(size)

    def fetchall(self):
        self._own_answer()
        return super().fetchall()

    def __iter__(self):
        self._own_answer()
        return super().__iter__()

    @property
    def rowcount(self):
        self._own_answer()
        return super().rowcount


# The pipeline of the innermost pipelined() block in this thread, if any, and what runs once it is answered.
_pipeline: ContextVar[psycopg.Pipeline | None] = ContextVar("core_prepared_pipeline", default=None)
_when_answered: ContextVar[list | None] = ContextVar("core_prepared_when_answered", default=None)

_answering_classes: dict[type, type] = {}


def _answering(cursor_class: type) -> type:
    """`cursor_class` with _AnswerOwnStatement mixed in (Django's own cursors, inside a pipelined block)."""
    if issubclass(cursor_class, _AnswerOwnStatement):
        return cursor_class
    if cursor_class not in _answering_classes:
        _answering_classes[cursor_class] = type(f"Answering{cursor_class.__name__}", (_AnswerOwnStatement, cursor_class), {})
    return _answering_classes[cursor_class]


class _PreparingCursor(_AnswerOwnStatement, psycopg.Cursor):
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


@contextmanager
def pipelined():
    """Inside the block, statements on the default connection are sent without waiting for their answers: the
    client waits only where it needs one (a fetch), and once at the block's end, for all that is left. Use it
    inside a transaction (`with transaction.atomic(), pipelined():`), around a run of statements whose results
    nothing reads before the next one is sent: an UPDATE, an upsert, a hook's INSERT, an advisory lock.

    Why: a drain turn is ~30 statements, and on a loaded machine each round trip costs two wake-ups of
    processes that wait for a core, more than the statement itself (issue 18: tenant_scale's turns). In pipeline
    mode (psycopg, PostgreSQL's extended protocol) the transaction's BEGIN and the statements between two
    fetches travel together and are answered together.

    Errors: a statement that fails makes PostgreSQL skip the rest until the next sync, and its error is raised
    at that sync (a fetch, or the block's end) as django.db's (IntegrityError, DataError...): still inside the
    caller's atomic block, which rolls back as usual. Enter it inside the transaction, not around it: switching
    autocommit, as an outermost atomic block does at its start and end, costs a sync in pipeline mode, and the
    COMMIT is one round trip either way. Entered inside another pipelined block, it only adds a sync at its end.
    """
    connection.ensure_connection()
    raw = connection.connection
    factory = raw.cursor_factory
    # The cursors Django opens inside the block (the ORM's, connection.cursor()) read their own answers too.
    raw.cursor_factory = _answering(factory)
    answered: list = []
    try:
        with connection.wrap_database_errors, raw.pipeline() as pipeline:
            tokens = _pipeline.set(pipeline), _when_answered.set(answered)
            try:
                yield
            finally:
                _pipeline.reset(tokens[0])
                _when_answered.reset(tokens[1])
    finally:
        raw.cursor_factory = factory
    for callback in answered:
        callback()


def when_answered(callback) -> None:
    """Runs `callback()` once every statement sent so far has its answer: at once outside a pipelined block;
    inside one, as the block ends without an error (after its last sync, still in its transaction, out of
    pipeline mode). For a hook that decides on a statement's rowcount (events: whether deliveries were made)
    but not before the block's end: reading it where it is sent would cost a round trip of its own."""
    callbacks = _when_answered.get()
    if callbacks is None:
        callback()
    else:
        callbacks.append(callback)
