"""Keeping the report rollups (reports.models.Rollup) exact: the hooks that the services changing chats and
messages call inside their own transactions, the backfill for chats older than the rollups, and the rebuild.

Every write here is an upsert that adds (`count = count + EXCLUDED.count`): two transactions counting into
the same bucket both land, whichever commits first. Lock order: a hook runs after its caller has locked the
chat (and agent) rows it changes, so rollup rows are always locked last; each path writes rollup rows of its
own metrics (the drain: created, messages, first_response; assignment: wait; resolve: resolved,
resolution; an SLA check: sla_breached), in key order within one statement, so two paths never wait for
each other in a cycle.

While a tenant's backfill runs (reports.models.Backfill not done), a hook counts only the events of chats the
backfill has passed (id <= its cursor), and sets first times only on those; the backfill counts the others
from the rows. They agree through
the tenant's backfill lock (conversations.lock_objects.advisory_xact_lock): a hook takes it shared before it
reads the cursor, a backfill batch exclusively; so a batch either sees a hook's transaction committed (and
counts its changes from the rows) or the hook sees the batch's new cursor (and counts them itself).
"""

from datetime import datetime

from dataclasses import dataclass

from django.db import connection, transaction

from conversations.lock_objects import advisory_xact_lock
from conversations.models import Chat
from core.prepared import prepared_cursor

# The 15-minute UTC bucket of a time, and a duration in whole seconds (floored; never negative, should a
# clock have run ahead). The rebuild and the hooks use these very texts, so they agree to the second.
BUCKET_SQL = "date_bin('15 minutes', {0}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
# NULL when the end has not happened (greatest() alone would turn that NULL into 0).
SECONDS_SQL = "CASE WHEN ({1}) IS NOT NULL THEN greatest(0, floor(extract(epoch FROM ({1}) - ({0}))))::integer END"

# Value bins of a duration, for reports_rollupperiod: exact below 16 s, then 8 per doubling (16, 18, ..., 30,
# 32, 36, ...): bin = how many of these lower bounds are <= the seconds (PostgreSQL's width_bucket,
# Python's bisect_right). Few enough bins that a summary reads each period's bins quickly, narrow enough that
# the exact seconds of one bin are few (reports.selectors).
BIN_BOUNDS = list(range(8)) + [(8 + step) << (doubling - 3) for doubling in range(3, 31) for step in range(8)]
DURATION_METRICS = ("first_response", "wait", "resolution")
# A UTC day's total of a duration metric over every chat (dimension none, bin 0): one row that changes whenever
# that day's histogram does (counts only grow between two rebuilds), so a stored median of the day
# (reports.models.DayPercentiles) is current while its total equals this one (and a local day's figures,
# reports.models.LocalDay, while the sum of its UTC days' totals is the one they were stored with).
DAY_TOTAL = -2
BIN_SQL = (
    "CASE WHEN {metric} IN ('first_response', 'wait', 'resolution') "
    f"THEN width_bucket({{seconds}}, ARRAY[{', '.join(map(str, BIN_BOUNDS))}]) ELSE 0 END"
)


def _upsert(events: str, ctes: str = "") -> str:
    """One statement adding `events` (bucket, application_id, agent_id, metric, seconds, n) to the 15-minute
    rollups and to the coarse layer (reports.models.RollupPeriod: per UTC day and month, per dimension, value
    bins, exact seconds per agent and per application, and every chat's UTC day totals), after the statement's
    own `ctes`. It returns (rollup rows written, period rows
    written). The 15-minute rows are written first (the period insert waits for that CTE's count): every
    writer locks rollup rows, then period rows, each in key order, so two writers never wait in a cycle; and
    a rebuild's lock on reports_rollup holds the period rows' writers too."""
    return f"""
WITH {ctes + "," if ctes else ""}
events AS MATERIALIZED ({events}),
rollup AS (
    INSERT INTO reports_rollup AS r (bucket, application_id, agent_id, metric, seconds, count)
    SELECT bucket, application_id, agent_id, metric, seconds, sum(n) FROM events
    GROUP BY bucket, application_id, agent_id, metric, seconds
    ORDER BY bucket, application_id, agent_id, metric, seconds
    ON CONFLICT (bucket, application_id, agent_id, metric, seconds) DO UPDATE SET count = r.count + EXCLUDED.count
    RETURNING 1
),
period AS (
    INSERT INTO reports_rollupperiod AS p (dimension, metric, span, bin, period, key, seconds, count)
    SELECT dim.dimension, e.metric, span.span, CASE WHEN exact.seconds = {DAY_TOTAL} THEN 0 ELSE e.bin END,
           CASE span.span WHEN 'd' THEN e.day ELSE date_trunc('month', e.day)::date END,
           CASE dim.dimension WHEN 'g' THEN e.agent_id WHEN 'a' THEN e.application_id ELSE 0 END,
           exact.seconds, sum(e.n)
    FROM (
        SELECT (bucket AT TIME ZONE 'UTC')::date AS day, application_id, agent_id, metric, seconds, n,
               {BIN_SQL.format(metric="metric", seconds="seconds")} AS bin
        FROM events
    ) AS e
    CROSS JOIN (VALUES ('d'), ('m')) AS span(span)
    CROSS JOIN (VALUES ('n'), ('g'), ('a')) AS dim(dimension)
    -- The bin's total; for a duration, its exact seconds per agent and per application (every chat's are the
    -- applications' summed: a summary reads one bin's seconds, few, so it adds them up rather than the hooks
    -- writing a third copy), and every chat's UTC day total.
    CROSS JOIN LATERAL (
        SELECT -1 AS seconds UNION ALL SELECT e.seconds WHERE e.metric IN {DURATION_METRICS} AND dim.dimension <> 'n'
        UNION ALL SELECT {DAY_TOTAL} WHERE e.metric IN {DURATION_METRICS} AND span.span = 'd' AND dim.dimension = 'n'
    ) AS exact
    WHERE (SELECT count(*) FROM rollup) >= 0
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (dimension, metric, span, bin, period, key, seconds) DO UPDATE SET count = p.count + EXCLUDED.count
    RETURNING 1
)
SELECT (SELECT count(*) FROM rollup), (SELECT count(*) FROM period)
"""


def _bucket(column: str) -> str:
    return BUCKET_SQL.format(column)


def _seconds(start: str, end: str) -> str:
    return SECONDS_SQL.format(start, end)

# Which chats' events a hook counts: all of them once the tenant's backfill is done (or has no row), else those
# with id <= its cursor. Read under the shared backfill lock (see the module's docstring), even when done:
# reports_backfill_start may undo it, and a hook that read "done" must not count after it. The shared lock
# lives in the lock manager's memory (no row written) and only waits while a batch or a start holds it. The
# drain's and the assignment's hooks read the cursor inside their own statement, the one after the lock's (a
# new statement, so a new snapshot: a batch that held the lock has committed by then): one round trip less
# each, per drain turn; the resolve's hook reads it first (_counted_up_to), to skip its statement.
_COUNTED = """{0} <= (SELECT CASE WHEN bool_and(backfill.done) IS NOT FALSE THEN 9223372036854775807
                              ELSE max(backfill.cursor) END FROM reports_backfill AS backfill)"""


def _backfill_lock_name() -> str:
    return f"reports-backfill:{connection.schema_name}"


def _counted_up_to() -> int | None:
    advisory_xact_lock(name=_backfill_lock_name(), shared=True)
    with prepared_cursor() as cursor:
        # A new statement, so a new snapshot: a batch that held the lock has committed by now.
        cursor.execute("SELECT done, cursor FROM reports_backfill")
        row = cursor.fetchone()
    return None if row is None or row[0] else row[1]


# Rows a drain batch just inserted (by id): the chats' creations, the messages, and, for chats whose first
# agent message is among them (the drain persists a chat's messages in number order, so the first one
# persisted is the first in the chat), first_response_at, set here in the same statement. Private notes
# (is_private) are no answer to the customer: neither counted as messages nor a first response.
_CREATIONS_PERSISTED = _upsert(
    ctes=f"""
new_chats AS (
    SELECT application_id, created_at FROM conversations_chat
    WHERE id = ANY(%(chats)s) AND {_COUNTED.format("id")}
), new_messages AS (
    SELECT m.chat_id, m.number, m.sender, m.author_id, m.created_at, c.application_id
    FROM conversations_message AS m JOIN conversations_chat AS c ON c.id = m.chat_id
    WHERE m.id = ANY(%(messages)s) AND NOT m.is_private
), first_responses AS (
    -- Only for counted chats: the backfill fills the others' from the rows (an older reply may exist).
    UPDATE conversations_chat AS chat SET first_response_at = f.created_at
    FROM (
        SELECT DISTINCT ON (chat_id) chat_id, created_at, author_id FROM new_messages
        WHERE sender = 'agent' ORDER BY chat_id, number
    ) AS f
    WHERE chat.id = f.chat_id AND chat.first_response_at IS NULL AND {_COUNTED.format("chat.id")}
    RETURNING chat.application_id, chat.created_at, chat.first_response_at, f.author_id
)
""",
    events=f"""
    SELECT {_bucket("created_at")} AS bucket, application_id, 0::bigint AS agent_id, 'created' AS metric,
           0 AS seconds, 1 AS n
    FROM new_chats
    UNION ALL
    SELECT {_bucket("created_at")}, application_id,
           CASE WHEN sender = 'agent' THEN coalesce(author_id, 0) ELSE 0 END, 'messages', 0, 1
    FROM new_messages WHERE {_COUNTED.format("chat_id")}
    UNION ALL
    SELECT {_bucket("created_at")}, application_id, coalesce(author_id, 0), 'first_response',
           {_seconds("created_at", "first_response_at")}, 1
    FROM first_responses
""",
)

# Chats just given to agents: for those never assigned before, first_assigned_at and their waiting time.
_CHATS_ASSIGNED = _upsert(
    ctes=f"""
firsts AS (
    UPDATE conversations_chat AS chat SET first_assigned_at = d.at
    FROM unnest(%(chats)s::bigint[], %(agents)s::bigint[], %(times)s::timestamptz[]) AS d(id, agent, at)
    WHERE chat.id = d.id AND chat.first_assigned_at IS NULL AND {_COUNTED.format("chat.id")}
    RETURNING chat.application_id, chat.created_at, chat.first_assigned_at, d.agent
)
""",
    events=f"""
    SELECT {_bucket("created_at")} AS bucket, application_id, coalesce(agent, 0) AS agent_id, 'wait' AS metric,
           {_seconds("created_at", "first_assigned_at")} AS seconds, 1 AS n
    FROM firsts
""",
)

_CHAT_RESOLVED = _upsert(
    events=f"""
    SELECT {_bucket("%(resolved_at)s")} AS bucket, %(application)s::bigint AS application_id,
           %(agent)s::bigint AS agent_id, 'resolved' AS metric, 0 AS seconds, 1 AS n
    UNION ALL
    SELECT {_bucket("%(created_at)s")}, %(application)s::bigint, %(agent)s::bigint, 'resolution',
           {_seconds("%(created_at)s", "%(resolved_at)s")}, 1
"""
)

# In the bucket of the breach, for the chat's application and the agent holding it then (0: none).
_SLA_BREACHED = _upsert(
    events=f"""
    SELECT {_bucket("%(at)s")} AS bucket, application_id, coalesce(assigned_agent_id, 0) AS agent_id,
           'sla_breached' AS metric, 0 AS seconds, 1 AS n
    FROM conversations_chat WHERE id = %(chat)s
"""
)


def report_creations_persisted(*, chat_ids: list[int], message_ids: list[int]) -> None:
    """Counts chats and messages a drain batch has just inserted, and sets the chats' first_response_at.

    Called by the drain (conversations.services) inside the batch's transaction, with the ids its inserts
    returned: rows skipped as already there (a redelivered batch) are not in them, so nothing counts twice.
    """
    if not chat_ids and not message_ids:
        return
    advisory_xact_lock(name=_backfill_lock_name(), shared=True)
    with prepared_cursor() as cursor:
        cursor.execute(_CREATIONS_PERSISTED, {"chats": chat_ids, "messages": message_ids})


def report_chats_assigned(*, chat_ids: list[int], agent_ids: list[int], times: list[datetime]) -> None:
    """Records the first assignment of each of these chats (`first_assigned_at` and its waiting time); a
    chat assigned before (a transfer, or a requeued chat served again) counts nothing. Called in the
    assigning transaction, after the chats' rows were updated (and so locked)."""
    if not chat_ids:
        return
    advisory_xact_lock(name=_backfill_lock_name(), shared=True)
    with prepared_cursor() as cursor:
        cursor.execute(_CHATS_ASSIGNED, {"chats": chat_ids, "agents": agent_ids, "times": times})


def report_chat_resolved(*, chat: Chat) -> None:
    """Counts a resolution (in the bucket of `resolved_at`, for the agent holding the chat then) and its
    duration (in the bucket of the chat's creation). Called in the resolving transaction, once per chat:
    chat_resolve refuses a chat already resolved."""
    upto = _counted_up_to()
    if upto is not None and chat.id > upto:
        return  # the backfill counts it, from the row this transaction leaves
    with connection.cursor() as cursor:
        cursor.execute(
            _CHAT_RESOLVED,
            {
                "resolved_at": chat.resolved_at,
                "created_at": chat.created_at,
                "application": chat.application_id,
                "agent": chat.assigned_agent_id or 0,
            },
        )


def report_sla_breached(*, chat_id: int, at: datetime) -> None:
    """Counts one SLA breach of the chat at `at` (the summary's `sla_breaches`, in the day of `at`; by the
    agent holding the chat when this is called, none if it is waiting). For routing's SLA checks (issue 24),
    in the transaction that records the breach, after it locked the chat, once per breach.

    Counted whatever the backfill's state: breaches leave no row that the backfill or the rebuild could
    recount, so both leave these rollup rows alone, and only this function writes them."""
    with connection.cursor() as cursor:
        cursor.execute(_SLA_BREACHED, {"chat": chat_id, "at": at})


# --- counting chats from the rows: the backfill and the rebuild -------------------------------------------

# The chats in (after, upto] (upto NULL: no end).
_RANGE = "{0} > %(after)s AND (%(upto)s::bigint IS NULL OR {0} <= %(upto)s::bigint)"

# Their missing first response and first assignment times, from the messages (the first non-private agent
# message) and the assignment history (the first stint): chats older than the hooks have none (the hooks
# set them only for counted chats, which the backfill has passed), or a rebuild's caller erased them.
_FIRST_TIMES = [
    f"""
    UPDATE conversations_chat AS chat SET first_response_at = f.at
    FROM (
        SELECT c.id, (
            SELECT m.created_at FROM conversations_message AS m
            WHERE m.chat_id = c.id AND m.sender = 'agent' AND NOT m.is_private ORDER BY m.number LIMIT 1
        ) AS at
        FROM conversations_chat AS c WHERE {_RANGE.format("c.id")} AND c.first_response_at IS NULL
    ) AS f
    WHERE chat.id = f.id AND chat.first_response_at IS NULL AND f.at IS NOT NULL
    """,
    f"""
    UPDATE conversations_chat AS chat SET first_assigned_at = f.at
    FROM (
        SELECT c.id, (
            SELECT a.assigned_at FROM agents_assignment AS a WHERE a.chat_id = c.id ORDER BY a.id LIMIT 1
        ) AS at
        FROM conversations_chat AS c WHERE {_RANGE.format("c.id")} AND c.first_assigned_at IS NULL
    ) AS f
    WHERE chat.id = f.id AND chat.first_assigned_at IS NULL AND f.at IS NOT NULL
    """,
]

# Every event of the chats in the range, recounted from the rows and added to the rollups.
_CHATS_COUNT = _upsert(
    events=f"""
    -- One pass over the chats, each giving its events (NULL where it has not happened yet).
    SELECT e.bucket, c.application_id, e.agent_id, e.metric, e.seconds, 1 AS n
    FROM conversations_chat AS c
    LEFT JOIN (
        SELECT DISTINCT ON (chat_id) chat_id, agent_id FROM agents_assignment
        WHERE {_RANGE.format("chat_id")} ORDER BY chat_id, id
    ) AS first_stint ON first_stint.chat_id = c.id
    LEFT JOIN LATERAL (
        SELECT author_id FROM conversations_message AS m
        WHERE m.chat_id = c.id AND c.first_response_at IS NOT NULL AND m.sender = 'agent' AND NOT m.is_private
        ORDER BY m.number LIMIT 1
    ) AS first_reply ON true
    CROSS JOIN LATERAL (VALUES
        ({_bucket("c.created_at")}, 0::bigint, 'created', 0),
        ({_bucket("c.resolved_at")}, coalesce(c.assigned_agent_id, 0), 'resolved', 0),
        ({_bucket("c.created_at")}, coalesce(c.assigned_agent_id, 0), 'resolution',
         {_seconds("c.created_at", "c.resolved_at")}),
        ({_bucket("c.created_at")}, coalesce(first_reply.author_id, 0), 'first_response',
         {_seconds("c.created_at", "c.first_response_at")}),
        ({_bucket("c.created_at")}, coalesce(first_stint.agent_id, 0), 'wait',
         {_seconds("c.created_at", "c.first_assigned_at")})
    ) AS e(bucket, agent_id, metric, seconds)
    WHERE {_RANGE.format("c.id")} AND e.bucket IS NOT NULL AND e.seconds IS NOT NULL
    UNION ALL
    SELECT {_bucket("m.created_at")}, c.application_id,
           CASE WHEN m.sender = 'agent' THEN coalesce(m.author_id, 0) ELSE 0 END, 'messages', 0, 1
    FROM conversations_message AS m JOIN conversations_chat AS c ON c.id = m.chat_id
    WHERE {_RANGE.format("m.chat_id")} AND NOT m.is_private
"""
)


def _chats_count(cursor, *, after: int, upto: int | None, first_times: bool) -> int:
    """Adds the events of the chats in (after, upto] to the rollups; returns the rollup rows written."""
    bounds = {"after": after, "upto": upto}
    if first_times:
        for statement in _FIRST_TIMES:
            cursor.execute(statement, bounds)
    cursor.execute(_CHATS_COUNT, bounds)
    return cursor.fetchone()[0]


@dataclass(frozen=True)
class BackfillStep:
    done: bool
    cursor: int  # the rollups hold the events of the chats with id <= cursor (every chat when done)
    chats: int  # chats counted by this step (0: none, the next one was busy, or nothing was left)


# The chats after the cursor, up to a batch and one (is there more?), and those of them this batch can lock
# without waiting: a chat locked by another transaction is one whose hook waits for this batch, or will.
_BATCH_CANDIDATES = "SELECT id FROM conversations_chat WHERE id > %s ORDER BY id LIMIT %s"
_BATCH_LOCK = (
    "SELECT id FROM conversations_chat WHERE id > %(after)s AND (%(upto)s::bigint IS NULL OR id <= %(upto)s::bigint) "
    "ORDER BY id FOR UPDATE SKIP LOCKED"
)
_BATCH_VISIBLE = (
    "SELECT id FROM conversations_chat WHERE id > %(after)s AND (%(upto)s::bigint IS NULL OR id <= %(upto)s::bigint)"
)


def reports_backfill_step(*, batch_size: int) -> BackfillStep:
    """Counts the next `batch_size` chats after the current tenant's backfill cursor from the rows (their
    missing first times filled first), moves the cursor past them, and marks the backfill done when none is left. One
    transaction: a step that fails leaves the cursor where it was, so the backfill resumes from there.

    Never waits for a chat row: a chat locked by another transaction ends the batch before it (that
    transaction's hook is waiting for this one, or will read the new cursor); its next step starts there.
    It waits only for the backfill lock, held shared by hooks' transactions of this tenant until they end.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # FOR UPDATE: two backfill runners of one tenant take turns.
        cursor.execute("SELECT done, cursor FROM reports_backfill FOR UPDATE")
        row = cursor.fetchone()
        if row is None or row[0]:
            return BackfillStep(done=True, cursor=row[1] if row else 0, chats=0)
        after = row[1]
        advisory_xact_lock(name=_backfill_lock_name())
        cursor.execute(_BATCH_CANDIDATES, [after, batch_size + 1])
        candidates = [chat_id for (chat_id,) in cursor.fetchall()]
        # No end when the batch holds the rest: chats committed since (their hooks waited for this lock)
        # are in it too.
        upto = candidates[batch_size - 1] if len(candidates) > batch_size else None
        bounds = {"after": after, "upto": upto}
        cursor.execute(_BATCH_LOCK, bounds)
        locked = {chat_id for (chat_id,) in cursor.fetchall()}
        cursor.execute(_BATCH_VISIBLE, bounds)
        busy = [chat_id for (chat_id,) in cursor.fetchall() if chat_id not in locked]
        if busy:
            upto = min(busy) - 1
            if upto <= after:
                return BackfillStep(done=False, cursor=after, chats=0)
        _chats_count(cursor, after=after, upto=upto, first_times=True)
        cursor.execute(
            "SELECT count(*), max(id) FROM conversations_chat WHERE " + _RANGE.format("id"), {"after": after, "upto": upto}
        )
        chats, last = cursor.fetchone()
        done = upto is None
        new_cursor = (last or after) if done else upto
        cursor.execute("UPDATE reports_backfill SET done = %s, cursor = %s, updated_at = now()", [done, new_cursor])
    return BackfillStep(done=done, cursor=new_cursor, chats=chats)


def reports_backfill_start() -> None:
    """Marks the current tenant's rollups as not built and empties them (but for SLA breaches, which only
    their hook counts): the backfill then counts every chat, and the summary answers 503 until it is done.
    For a schema that holds chats older than the rollups (migration reports.0002)."""
    with transaction.atomic(), connection.cursor() as cursor:
        _rollups_lock(cursor)
        cursor.execute("DELETE FROM reports_rollup WHERE metric <> 'sla_breached'")
        cursor.execute("DELETE FROM reports_rollupperiod WHERE metric <> 'sla_breached'")
        cursor.execute("UPDATE reports_backfill SET done = false, cursor = 0, updated_at = now()")


def _rollups_lock(cursor) -> None:
    # The backfill lock, for hooks that read the cursor (the backfill is running), and the table (SHARE ROW
    # EXCLUSIVE) for those that did not (it was done): either kind waits for this transaction or was waited
    # for, and its counts are in what this transaction deletes or adds to. reports_rollupperiod needs no lock
    # of its own: every statement writing it writes reports_rollup first (reports.services._upsert).
    advisory_xact_lock(name=_backfill_lock_name())
    cursor.execute("LOCK TABLE reports_rollup IN SHARE ROW EXCLUSIVE MODE")
    # The days' stored figures (reports.models.DayPercentiles, LocalDay) are current while their UTC days'
    # totals have not changed; the caller takes totals down, so it empties them, after summaries storing them
    # (ROW EXCLUSIVE, taken before their snapshot) have ended; those that start meanwhile store nothing.
    cursor.execute("LOCK TABLE reports_daypercentiles, reports_localday IN SHARE MODE")
    cursor.execute("DELETE FROM reports_daypercentiles")
    cursor.execute("DELETE FROM reports_localday")


def reports_rebuild(*, backfill_first_times: bool = False) -> int:
    """Recomputes the current tenant's rollups from its chats, messages and assignment history in one
    transaction, and marks its backfill done; returns the number of rollup rows written. For drift after
    rows were changed by hand, on a tenant small enough to be recounted at once (for a large one:
    reports_backfill_start, then `manage.py reports_backfill`, which does not hold the hooks for long).

    The locks (_rollups_lock) make the hooks' upserts wait meanwhile (reads go on). A transaction that
    counted before has committed by the time the recount reads; one that counts after waits, then adds to
    the rebuilt figures what the recount could not see: nothing is lost or counted twice.
    `backfill_first_times`: first fill the chats' missing first_response_at / first_assigned_at from the
    messages and the assignment history (it updates chat rows: run it while the tenant is quiet).
    """
    with transaction.atomic(), connection.cursor() as cursor:
        _rollups_lock(cursor)
        # One aggregate over every chat and message: in memory rather than spilled to disk in partitions.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("DELETE FROM reports_rollup WHERE metric <> 'sla_breached'")
        cursor.execute("DELETE FROM reports_rollupperiod WHERE metric <> 'sla_breached'")
        written = _chats_count(cursor, after=0, upto=None, first_times=backfill_first_times)
        cursor.execute("UPDATE reports_backfill SET done = true, updated_at = now()")
        return written
