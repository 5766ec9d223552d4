"""Keeping the report rollups (reports.models.Rollup) exact: the hooks that the services changing chats and
messages call inside their own transactions, and the rebuild from the rows.

Every write here is an upsert that adds (`count = count + EXCLUDED.count`): two transactions counting into
the same bucket both land, whichever commits first. Lock order: a hook runs after its caller has locked the
chat (and agent) rows it changes, so rollup rows are always locked last; each path writes rollup rows of its
own metrics (the drain: created, messages, first_response; assignment: wait; resolve: resolved,
resolution), in key order within one statement, so two paths never wait for each other in a cycle.
"""

from datetime import datetime

from django.db import connection, transaction

from conversations.models import Chat

# The 15-minute UTC bucket of a time, and a duration in whole seconds (floored; never negative, should a
# clock have run ahead). The rebuild and the hooks use these very texts, so they agree to the second.
BUCKET_SQL = "date_bin('15 minutes', {0}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
# NULL when the end has not happened (greatest() alone would turn that NULL into 0).
SECONDS_SQL = "CASE WHEN ({1}) IS NOT NULL THEN greatest(0, floor(extract(epoch FROM ({1}) - ({0}))))::integer END"

_UPSERT = """
INSERT INTO reports_rollup AS r (bucket, application_id, agent_id, metric, seconds, count)
SELECT bucket, application_id, agent_id, metric, seconds, sum(n) FROM ({events}) AS e
GROUP BY bucket, application_id, agent_id, metric, seconds
ORDER BY bucket, application_id, agent_id, metric, seconds
ON CONFLICT (bucket, application_id, agent_id, metric, seconds) DO UPDATE SET count = r.count + EXCLUDED.count
"""


def _bucket(column: str) -> str:
    return BUCKET_SQL.format(column)


def _seconds(start: str, end: str) -> str:
    return SECONDS_SQL.format(start, end)


# Rows a drain batch just inserted (by id): the chats' creations, the messages, and, for chats whose first
# agent message is among them (the drain persists a chat's messages in number order, so the first one
# persisted is the first in the chat), first_response_at, set here in the same statement.
_CREATIONS_PERSISTED = f"""
WITH new_chats AS (
    SELECT application_id, created_at FROM conversations_chat WHERE id = ANY(%(chats)s)
), new_messages AS (
    SELECT m.chat_id, m.number, m.sender, m.author_id, m.created_at, c.application_id
    FROM conversations_message AS m JOIN conversations_chat AS c ON c.id = m.chat_id
    WHERE m.id = ANY(%(messages)s)
), first_responses AS (
    UPDATE conversations_chat AS chat SET first_response_at = f.created_at
    FROM (
        SELECT DISTINCT ON (chat_id) chat_id, created_at, author_id FROM new_messages
        WHERE sender = 'agent' ORDER BY chat_id, number
    ) AS f
    WHERE chat.id = f.chat_id AND chat.first_response_at IS NULL
    RETURNING chat.application_id, chat.created_at, chat.first_response_at, f.author_id
)
{_UPSERT.format(events=f'''
    SELECT {_bucket("created_at")} AS bucket, application_id, 0::bigint AS agent_id, 'created' AS metric,
           0 AS seconds, 1 AS n
    FROM new_chats
    UNION ALL
    SELECT {_bucket("created_at")}, application_id,
           CASE WHEN sender = 'agent' THEN coalesce(author_id, 0) ELSE 0 END, 'messages', 0, 1
    FROM new_messages
    UNION ALL
    SELECT {_bucket("created_at")}, application_id, coalesce(author_id, 0), 'first_response',
           {_seconds("created_at", "first_response_at")}, 1
    FROM first_responses
''')}
"""

# Chats just given to agents: for those never assigned before, first_assigned_at and their waiting time.
_CHATS_ASSIGNED = f"""
WITH firsts AS (
    UPDATE conversations_chat AS chat SET first_assigned_at = d.at
    FROM unnest(%(chats)s::bigint[], %(agents)s::bigint[], %(times)s::timestamptz[]) AS d(id, agent, at)
    WHERE chat.id = d.id AND chat.first_assigned_at IS NULL
    RETURNING chat.application_id, chat.created_at, chat.first_assigned_at, d.agent
)
{_UPSERT.format(events=f'''
    SELECT {_bucket("created_at")} AS bucket, application_id, coalesce(agent, 0) AS agent_id, 'wait' AS metric,
           {_seconds("created_at", "first_assigned_at")} AS seconds, 1 AS n
    FROM firsts
''')}
"""

_CHAT_RESOLVED = _UPSERT.format(
    events=f"""
    SELECT {_bucket("%(resolved_at)s")} AS bucket, %(application)s::bigint AS application_id,
           %(agent)s::bigint AS agent_id, 'resolved' AS metric, 0 AS seconds, 1 AS n
    UNION ALL
    SELECT {_bucket("%(created_at)s")}, %(application)s::bigint, %(agent)s::bigint, 'resolution',
           {_seconds("%(created_at)s", "%(resolved_at)s")}, 1
"""
)


def report_creations_persisted(*, chat_ids: list[int], message_ids: list[int]) -> None:
    """Counts chats and messages a drain batch has just inserted, and sets the chats' first_response_at.

    Called by the drain (conversations.services) inside the batch's transaction, with the ids its inserts
    returned: rows skipped as already there (a redelivered batch) are not in them, so nothing counts twice.
    """
    if not chat_ids and not message_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(_CREATIONS_PERSISTED, {"chats": chat_ids, "messages": message_ids})


def report_chats_assigned(*, chat_ids: list[int], agent_ids: list[int], times: list[datetime]) -> None:
    """Records the first assignment of each of these chats (`first_assigned_at` and its waiting time); a
    chat assigned before (a transfer, or a requeued chat served again) counts nothing. Called in the
    assigning transaction, after the chats' rows were updated (and so locked)."""
    if not chat_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(_CHATS_ASSIGNED, {"chats": chat_ids, "agents": agent_ids, "times": times})


def report_chat_resolved(*, chat: Chat) -> None:
    """Counts a resolution (in the bucket of `resolved_at`, for the agent holding the chat then) and its
    duration (in the bucket of the chat's creation). Called in the resolving transaction, once per chat:
    chat_resolve refuses a chat already resolved."""
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


# --- the rebuild from the rows ---------------------------------------------------------------------------

# Chats whose first_response_at / first_assigned_at predate the hooks (or were changed by hand): filled from
# the messages (the agent message with the lowest number) and the assignment history (the first stint).
FIRST_TIMES_BACKFILL = [
    """
    UPDATE conversations_chat AS chat SET first_response_at = f.created_at
    FROM (
        SELECT DISTINCT ON (chat_id) chat_id, created_at FROM conversations_message
        WHERE sender = 'agent' ORDER BY chat_id, number
    ) AS f
    WHERE chat.id = f.chat_id AND chat.first_response_at IS NULL
    """,
    """
    UPDATE conversations_chat AS chat SET first_assigned_at = a.assigned_at
    FROM (SELECT DISTINCT ON (chat_id) chat_id, assigned_at FROM agents_assignment ORDER BY chat_id, id) AS a
    WHERE chat.id = a.chat_id AND chat.first_assigned_at IS NULL
    """,
]

_REBUILD = f"""
INSERT INTO reports_rollup (bucket, application_id, agent_id, metric, seconds, count)
SELECT bucket, application_id, agent_id, metric, seconds, count(*) FROM (
    -- One pass over the chats, each giving its events (NULL where it has not happened yet).
    SELECT e.bucket, c.application_id, e.agent_id, e.metric, e.seconds
    FROM conversations_chat AS c
    LEFT JOIN (
        SELECT DISTINCT ON (chat_id) chat_id, agent_id FROM agents_assignment ORDER BY chat_id, id
    ) AS first_stint ON first_stint.chat_id = c.id
    LEFT JOIN LATERAL (
        SELECT author_id FROM conversations_message AS m
        WHERE m.chat_id = c.id AND c.first_response_at IS NOT NULL AND m.sender = 'agent'
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
    WHERE e.bucket IS NOT NULL AND e.seconds IS NOT NULL
    UNION ALL
    SELECT {_bucket("m.created_at")}, c.application_id,
           CASE WHEN m.sender = 'agent' THEN coalesce(m.author_id, 0) ELSE 0 END, 'messages', 0
    FROM conversations_message AS m JOIN conversations_chat AS c ON c.id = m.chat_id
) AS e
GROUP BY bucket, application_id, agent_id, metric, seconds
"""


def reports_rebuild(*, backfill_first_times: bool = False) -> int:
    """Recomputes the current tenant's rollups from its chats, messages and assignment history; returns the
    number of rollup rows written. For existing data (the migration runs it) and for drift after rows were
    changed by hand.

    The table is locked first (SHARE ROW EXCLUSIVE: the hooks' upserts wait, reads go on). A transaction
    that counted before the lock has committed by the time the recount reads (the lock waited for it); one
    that counts after it waits, then adds to the rebuilt figures what the recount could not see: nothing is
    lost or counted twice. `backfill_first_times`: first fill the chats' first_response_at /
    first_assigned_at from the messages and the assignment history.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE reports_rollup IN SHARE ROW EXCLUSIVE MODE")
        # One aggregate over every chat and message: in memory rather than spilled to disk in partitions.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        if backfill_first_times:
            for statement in FIRST_TIMES_BACKFILL:
                cursor.execute(statement)
        cursor.execute("DELETE FROM reports_rollup")
        cursor.execute(_REBUILD)
        return cursor.rowcount
