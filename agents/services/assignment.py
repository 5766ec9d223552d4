"""The assignment engine: who gets which waiting chat, and when; resolving and assigning by hand.

Rules (PRODUCT.md, "Asynchronous work"):
- waiting chats are served strictly in arrival order: `created_at`, then application, then number;
- an agent is eligible when it is online, its user active, and it holds fewer assigned (unresolved) chats
  than its `max_customers`;
- the eligible agent with the fewest active chats wins; ties go to the one whose last assignment is the
  oldest (never assigned first), then to the lowest id;
- a chat routed to a team (routing: its application's team, or the team it was transferred to) goes only to
  that team's agents, and only while the team is open (business hours): FIFO per team, a team's head being
  its oldest waiting chat. An agent in several teams is one agent: one count against its max_customers.

Every change that can make an assignment possible schedules a run (`assignment_schedule`): a batch of
chats persisted, an agent going online or gaining capacity, a chat resolved or transferred. The same call
marks the tenant's `assignment` work in the due-work index (tenants.work), in the change's transaction: if
the run's task is lost, the dispatcher sends one. Each run settles that mark at its end
(`assignment_work_settle`): kept while chats wait for a free agent or a reply deadline is ahead, so the
safety net costs only tenants that have such work.
"""

import heapq
import logging
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from agents.hooks import ChatAssigned, chats_assigned_announce
from agents.models import Agent, Assignment
from agents.services.agents import agents_ensure
from agents.services.schedule import _assignment_run_schedule, assignment_schedule, deferred_runs
from audit.services import audit_record
from conversations.access import chat_access_check
from conversations.lock_objects import agent_lock, assignment_lock, chat_lock
from conversations.models import Chat
from core.exceptions import Conflict
from core.models import User
from core.prepared import pipelined, prepared_cursor
from events.services import CHAT_ASSIGNED, CHAT_RESOLVED, CHAT_TRANSFERRED, events_record_chats
from reports.services import report_chat_resolved, report_chats_assigned
from routing.selectors import routing_open_teams, routing_waiting_due
from tenants.models import TenantWork
from tenants.work import tenant_work_mark, tenant_work_marks_batched, tenant_work_settle, tenant_work_settled, tenant_work_version

logger = logging.getLogger(__name__)

_NEVER = datetime.min.replace(tzinfo=UTC)


# Assigned chats whose agent is gone: its user deleted (the chat's agent set to null) or deactivated (it
# can no longer sign in to answer). Two lookups in indexes on the agent, so that a run costs the same with
# 100 or 100,000 assigned chats (an OR of the two made PostgreSQL read every assigned chat). Returns each
# chat's agent, whose active chats go down; the status is re-checked on the row, so a chat resolved
# meanwhile is left alone.
# The orphans are found once (MATERIALIZED), then joined to the rows the UPDATE writes. Joined inline, a
# tenant whose chats arrived since its last ANALYZE (it looks empty to the planner) got both lookups re-run
# for each assigned chat: 211 ms a run at 401 assigned chats, growing with their square (issue 18).
_REQUEUE_ORPHANS = """
WITH gone AS MATERIALIZED (
    SELECT id, assigned_agent_id FROM conversations_chat WHERE assigned_agent_id IS NULL AND status = 'assigned'
    UNION ALL
    SELECT chat.id, chat.assigned_agent_id
    FROM core_user AS u JOIN conversations_chat AS chat ON chat.assigned_agent_id = u.id
    WHERE NOT u.is_active AND chat.status = 'assigned'
)
UPDATE conversations_chat AS chat
SET status = 'waiting', assigned_agent_id = NULL, assigned_at = NULL, updated_at = %s
FROM gone
WHERE chat.id = gone.id AND chat.status = 'assigned'
RETURNING chat.id, gone.assigned_agent_id
"""

# Assigned chats whose agent has not written since it got them. The status is re-checked by the UPDATE
# itself, so a chat resolved meanwhile is left alone.
_REQUEUE_TIMED_OUT = """
UPDATE conversations_chat AS chat
SET status = 'waiting', assigned_agent_id = NULL, assigned_at = NULL, updated_at = %(now)s
FROM conversations_chat AS before
WHERE before.id = chat.id
  AND chat.status = 'assigned' AND chat.assigned_at < %(cutoff)s
  AND NOT EXISTS (
      SELECT 1 FROM conversations_message AS m
      WHERE m.chat_id = chat.id AND m.sender = 'agent' AND m.created_at >= chat.assigned_at
  )
RETURNING chat.id, before.assigned_agent_id
"""

_CLOSE_STINTS = """
UPDATE agents_assignment SET ended_at = %s, end_reason = %s WHERE chat_id = ANY(%s) AND ended_at IS NULL
"""

# Locked so that an agent going offline (or losing capacity) either commits before this run reads it, or
# waits until the run has committed: never assigned a chat after its offline switch was acknowledged.
# The lock also holds every agent's `active_chats` still until this run commits: a resolve decrements it
# after this run, never under it.
# Taken before the queue's head: the one exception to the lock order, explained in conversations.lock_objects.
_ELIGIBLE_AGENTS = """
SELECT agent.user_id, agent.max_customers, agent.last_assigned_at, agent.active_chats
FROM agents_agent AS agent JOIN core_user AS u ON u.id = agent.user_id
WHERE agent.is_online AND u.is_active AND agent.max_customers > 0
ORDER BY agent.user_id
FOR NO KEY UPDATE OF agent
"""

# The head of the queue: waiting chats routed to no team, or to a team that is open with an agent who has
# room (the ids passed), each with that team. A chat transferred to a team's queue is routed by that
# transfer, else by its application. Chats of a team with no room are left out rather than read and skipped,
# so that a closed or full team's backlog never fills a round. Locked so that a concurrent resolve of a
# waiting chat waits for this run (only the chats: the routing rows are read, not locked).
_WAITING_HEAD = """
SELECT chat.id, chat.application_id, chat.created_at, COALESCE(chat_team.team_id, app_team.team_id)
FROM conversations_chat AS chat
LEFT JOIN routing_chatteam AS chat_team ON chat_team.chat_id = chat.id
LEFT JOIN routing_applicationteam AS app_team ON app_team.application_id = chat.application_id
WHERE chat.status = 'waiting'
  AND (COALESCE(chat_team.team_id, app_team.team_id) IS NULL OR COALESCE(chat_team.team_id, app_team.team_id) = ANY(%s))
ORDER BY chat.created_at, chat.application_id, chat.number
LIMIT %s
FOR UPDATE OF chat
"""

# The agent each chat of the batch last timed out with, if its latest stint ended that way.
_TIMED_OUT_WITH = """
SELECT chat_id, agent_id FROM (
    SELECT DISTINCT ON (chat_id) chat_id, agent_id, end_reason FROM agents_assignment
    WHERE chat_id = ANY(%s) ORDER BY chat_id, id DESC
) AS latest WHERE end_reason = 'timed_out'
"""

_ASSIGN_CHATS = """
UPDATE conversations_chat AS chat
SET status = 'assigned', assigned_agent_id = d.agent, assigned_at = d.at, updated_at = d.at
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS d(id, agent, at)
WHERE chat.id = d.id
"""

_TOUCH_AGENTS = """
UPDATE agents_agent AS agent SET last_assigned_at = d.at, active_chats = agent.active_chats + d.added
FROM unnest(%s::bigint[], %s::timestamptz[], %s::integer[]) AS d(id, at, added)
WHERE agent.user_id = d.id
"""

# Agents' active chats changed by `delta` (negative when chats leave them). Rows in id order, the order the
# engine locks them in.
_ACTIVE_CHATS_ADD = """
UPDATE agents_agent AS agent SET active_chats = agent.active_chats + d.delta
FROM (SELECT * FROM unnest(%s::bigint[], %s::integer[]) AS u(id, delta) ORDER BY id) AS d
WHERE agent.user_id = d.id
"""

_LOG_STINTS = """
INSERT INTO agents_assignment (chat_id, agent_id, reason, assigned_at, end_reason)
SELECT d.chat, d.agent, %s, d.at, ''
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) WITH ORDINALITY AS d(chat, agent, at, position)
ORDER BY d.position
"""


def _requeue(cursor, *, now: datetime) -> None:
    """Puts back at the head of the queue the chats whose agent is gone, and (if the reply timeout is on)
    those whose agent has not replied in time. They keep their arrival time, hence their place."""
    timeout = settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS
    with prepared_cursor() as timed_cursor:
        cursor.execute(_REQUEUE_ORPHANS, [now])
        if timeout > 0:
            # Sent before the orphans are read, so that a pipelined run waits once for both (core.prepared); it
            # leaves alone the chats the statement before it requeued (they are no longer assigned).
            timed_cursor.execute(_REQUEUE_TIMED_OUT, {"now": now, "cutoff": now - timedelta(seconds=timeout)})
        orphans = cursor.fetchall()
        if orphans:
            cursor.execute(_CLOSE_STINTS, [now, Assignment.EndReason.REQUEUED, [chat_id for chat_id, _ in orphans]])
            _active_chats_add(cursor, agent_ids=[agent_id for _, agent_id in orphans], delta=-1)
            logger.warning("requeued %s chats whose agent was deleted or deactivated", len(orphans))
        timed_out = timed_cursor.fetchall() if timeout > 0 else []
    if timed_out:
        cursor.execute(_CLOSE_STINTS, [now, Assignment.EndReason.TIMED_OUT, [chat_id for chat_id, _ in timed_out]])
        _active_chats_add(cursor, agent_ids=[agent_id for _, agent_id in timed_out], delta=-1)
        logger.info("requeued %s chats whose agent did not reply within %ss", len(timed_out), timeout)


def _active_chats_add(cursor, *, agent_ids: list[int | None], delta: int) -> None:
    """Adds `delta` to each listed agent's active chats, once per time it is listed (None: a deleted agent)."""
    totals: dict[int, int] = {}
    for agent_id in agent_ids:
        if agent_id is not None:
            totals[agent_id] = totals.get(agent_id, 0) + delta
    if totals:
        cursor.execute(_ACTIVE_CHATS_ADD, [list(totals), list(totals.values())])


class AgentPool:
    """The eligible agents with room, as `assignment_round_plan` picks from them. Entries are (active chats,
    last assigned at (never first), agent id, free slots), and a heap's order is the assignment rule: fewest
    active chats, then the oldest last assignment, then the lowest id.

    One heap of every agent (for chats routed to no team) and one per open team (its members). An agent in
    several teams has one state here, so whichever heap it is picked from, the pick uses its one count against
    max_customers; its entries in the other heaps are then stale and dropped when they reach the top (an entry
    is current only while it equals the agent's state)."""

    def __init__(self, agents: list[tuple[int, int, datetime | None, int]], teams: dict[int, list[int]] | None = None):
        self._state: dict[int, tuple[int, datetime, int]] = {}  # agent id -> (active chats, last assigned, free)
        self._heaps: dict[int | None, list[tuple]] = {None: []}
        self._teams_of: dict[int, list[int]] = defaultdict(list)
        for team_id, members in (teams or {}).items():
            self._heaps[team_id] = []
            for agent_id in members:
                self._teams_of[agent_id].append(team_id)
        for agent_id, max_customers, last_assigned_at, count in agents:
            if count < max_customers:
                self._put(agent_id, count, last_assigned_at or _NEVER, max_customers - count)

    def _put(self, agent_id: int, count: int, last_assigned_at: datetime, free: int) -> None:
        self._state[agent_id] = (count, last_assigned_at, free)
        entry = (count, last_assigned_at, agent_id, free)
        heapq.heappush(self._heaps[None], entry)
        for team_id in self._teams_of.get(agent_id, ()):
            heapq.heappush(self._heaps[team_id], entry)

    def _top(self, heap: list[tuple]) -> tuple | None:
        while heap and self._state.get(heap[0][2]) != (heap[0][0], heap[0][1], heap[0][3]):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def __bool__(self) -> bool:
        return bool(self._state)

    def capacity(self) -> int:
        """Free slots of every agent with room."""
        return sum(free for _, _, free in self._state.values())

    def teams_with_room(self) -> list[int]:
        """The open teams with at least one member who has room: the teams whose chats can be served now."""
        return [team_id for team_id, heap in self._heaps.items() if team_id is not None and self._top(heap) is not None]

    def pick(self, *, team: int | None, avoid: int | None) -> tuple | None:
        """The best entry for a chat of `team` (None: any agent), passing over `avoid` when another agent of
        the same heap is eligible; None if nobody can take it (a team closed now has no heap)."""
        heap = self._heaps.get(team)
        best = self._top(heap) if heap is not None else None
        if best is None or best[2] != avoid:
            return best
        heapq.heappop(heap)
        second = self._top(heap)
        heapq.heappush(heap, best)
        return second or best

    def take(self, entry: tuple, *, at: datetime) -> None:
        """The entry's agent got a chat at `at`: one slot fewer, one chat more, its last assignment moved."""
        count, _, agent_id, free = entry
        del self._state[agent_id]
        if free > 1:
            self._put(agent_id, count + 1, at, free - 1)


def assignment_pool(agents: list[tuple[int, int, datetime | None, int]], teams: dict[int, list[int]] | None = None) -> AgentPool:
    """The pool `assignment_round_plan` picks from: rows of (agent id, max customers, last assigned at, active
    chats), and the open teams' members (team id -> agent ids)."""
    return AgentPool(agents, teams)


@dataclass
class RoundPlan:
    """One round's decisions, in the order the chats were served, as the engine's three statements take them."""

    chat_ids: list[int] = field(default_factory=list)
    agent_ids: list[int] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    last_touch: dict[int, datetime] = field(default_factory=dict)  # agent -> its last assignment of the round
    added: dict[int, int] = field(default_factory=dict)  # agent -> chats it got this round
    assigned: list[ChatAssigned] = field(default_factory=list)


def assignment_round_plan(
    *,
    pool: AgentPool,
    head: list[tuple[int, int, datetime]],
    avoid: dict[int, int],
    at: datetime,
    teams: dict[int, int] | None = None,
) -> RoundPlan:
    """Decides who gets each chat of `head` ((id, application id, created at), oldest first), in order, until
    the pool runs out. Pure: no database, no clock; `pool` (from `assignment_pool`) is updated in place, so
    the next round goes on from it. `teams` names, per chat, the team it is routed to (absent: any agent); a
    chat whose team has no agent with room is passed over, and so are that team's later chats (FIFO per
    team), while other chats go on being served. `avoid` names, per chat, the agent it last timed out with
    (passed over when another agent is eligible). Each assignment gets its own microsecond after `at` (and
    never before its chat's creation), so assignment times, and the tie-break on them, follow the order of
    service."""
    plan = RoundPlan()
    teams = teams or {}
    for chat_id, application_id, created_at in head:
        if not pool:
            break
        entry = pool.pick(team=teams.get(chat_id), avoid=avoid.get(chat_id))
        if entry is None:
            continue
        _, _, agent_id, _ = entry
        at = max(at + timedelta(microseconds=1), created_at)
        plan.chat_ids.append(chat_id)
        plan.agent_ids.append(agent_id)
        plan.times.append(at)
        plan.last_touch[agent_id] = at
        plan.added[agent_id] = plan.added.get(agent_id, 0) + 1
        plan.assigned.append(ChatAssigned(chat_id, agent_id, application_id, created_at, at))
        pool.take(entry, at=at)
    return plan


def assignment_run(*, batch_size: int | None = None, settle: bool = False) -> int:
    """Assigns waiting chats to eligible agents, oldest chat first, until the queue or the capacity runs out.

    One transaction under the tenant's assignment lock (conversations.lock_objects.assignment_lock):
    eligible agents and their active counts are read once, the choices are made in memory
    (`assignment_round_plan`), and each round of `batch_size` chats is written with three statements.
    Returns the number of chats assigned.

    `settle`: the run also ends its share of the tenant's assignment mark (tenants.work), in its transaction:
    what the run's task and the drain's runs do (assignment_work_settle says what is left).

    Pipelined (core.prepared): the client waits for PostgreSQL where it reads (the requeued chats, the agents
    with the teams, the head of the queue, what is left for the mark) and for the COMMIT, not after each of the
    run's ~20 statements. The transaction's marks (its events' webhooks and retention) are one statement at its
    end (tenants.work.tenant_work_marks_batched), after the settle.
    """
    with transaction.atomic(), pipelined(), tenant_work_marks_batched():
        if not settle:
            return _assignment_run(batch_size=batch_size)
        with tenant_work_settled(kind=TenantWork.Kind.ASSIGNMENT, next_due_at=lambda: assignment_next_due_at(now=timezone.now())):
            return _assignment_run(batch_size=batch_size)


def _assignment_run(*, batch_size: int | None) -> int:
    batch_size = batch_size or settings.ASSIGNMENT_BATCH_SIZE
    announced: list[ChatAssigned] = []
    assigned = 0
    with prepared_cursor() as cursor:
        assignment_lock()
        _requeue(cursor, now=timezone.now())

        cursor.execute(_ELIGIBLE_AGENTS)
        # Read after the agents' locks, in the same flight: a team edit (which takes the assignment lock) is
        # wholly before this run.
        open_teams = routing_open_teams(at=timezone.now())
        agents = cursor.fetchall()
        pool = assignment_pool(agents, teams=open_teams)
        at = _NEVER
        while pool:
            requested = min(batch_size, pool.capacity())
            cursor.execute(_WAITING_HEAD, [pool.teams_with_room(), requested])
            rows = cursor.fetchall()
            if not rows:
                break
            head = [(chat_id, application_id, created_at) for chat_id, application_id, created_at, _ in rows]
            teams = {row[0]: row[3] for row in rows if row[3] is not None}
            # The clock is read after the counts and after this batch of chats was read: every resolve the
            # counts reflect committed (and was stamped) before it, so in the history a freed slot always
            # ends before the assignment that reuses it begins; and every chat read committed before it, so
            # no chat is assigned before it was created (a chat's own created_at is the floor as well, in
            # case it came from a machine whose clock runs ahead).
            at = max(at, timezone.now())
            avoid: dict[int, int] = {}
            if settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS > 0:
                cursor.execute(_TIMED_OUT_WITH, [[chat_id for chat_id, _, _ in head]])
                avoid = dict(cursor.fetchall())
            plan = assignment_round_plan(pool=pool, head=head, avoid=avoid, at=at, teams=teams)
            if not plan.chat_ids:
                break
            at = plan.times[-1]
            cursor.execute(_ASSIGN_CHATS, [plan.chat_ids, plan.agent_ids, plan.times])
            touched = list(plan.last_touch)
            cursor.execute(_TOUCH_AGENTS, [touched, [plan.last_touch[a] for a in touched], [plan.added[a] for a in touched]])
            cursor.execute(_LOG_STINTS, [Assignment.Reason.QUEUE, plan.chat_ids, plan.agent_ids, plan.times])
            report_chats_assigned(chat_ids=plan.chat_ids, agent_ids=plan.agent_ids, times=plan.times)
            events_record_chats(type=CHAT_ASSIGNED, chat_ids=plan.chat_ids)
            assigned += len(plan.chat_ids)
            announced += plan.assigned
            if len(head) < requested:
                # The queue ran dry. Chats arriving from now on schedule a run of their own; looping for
                # them here would keep this transaction (and the tenant's lock) open while they keep coming,
                # and none of its assignments would be visible until arrivals stopped.
                break
        chats_assigned_announce(announced)
    if assigned:
        logger.info("assigned %s chats", assigned)
    return assigned


# --- resolve and manual assignment -----------------------------------------------------------------------


def chat_resolve(*, chat: Chat, by: User | None = None) -> Chat:
    """Resolves a chat (by its assigned agent, an admin, or the system when `by` is None) and, if it held
    an agent's capacity, schedules the run that serves the next waiting chat.

    Raises PermissionDenied for another agent, Conflict if the chat is already resolved.
    """
    with transaction.atomic():
        chat = chat_lock(chat_id=chat.id)
        # Checked on the locked row: an assignee changed since the view read the chat is seen here.
        chat_access_check(chat=chat, user=by, action="resolve it")
        if chat.status == Chat.Status.RESOLVED:
            raise Conflict("The chat is already resolved.")
        held_capacity = chat.status == Chat.Status.ASSIGNED
        now = timezone.now()
        chat.status = Chat.Status.RESOLVED
        chat.resolved_at = now
        chat.save(update_fields=["status", "resolved_at", "updated_at"])
        Assignment.objects.filter(chat=chat, ended_at__isnull=True).update(
            ended_at=now, end_reason=Assignment.EndReason.RESOLVED
        )
        if held_capacity:
            # After the chat's row lock, in the lock order (conversations.lock_objects): waits for a running
            # assignment to commit, never deadlocks with it.
            Agent.objects.filter(pk=chat.assigned_agent_id).update(active_chats=F("active_chats") - 1)
        report_chat_resolved(chat=chat)  # the rollups: after the agent row, before the work marks
        if held_capacity:
            assignment_schedule()
        events_record_chats(type=CHAT_RESOLVED, chat_ids=[chat.id])
        audit_record(action="chat.resolved", target=chat)
    return chat


def chat_assign(*, chat: Chat, agent: Agent) -> Chat:
    """Gives a chat to a chosen agent (an admin's manual assignment, or a transfer of an assigned chat).

    The agent must be online and below its limit (Conflict otherwise): the capacity rule holds for
    admins too. Runs under the tenant's assignment lock, so it never races the engine. A transfer frees
    the previous agent's slot, which schedules a run.
    """
    with transaction.atomic():
        assignment_lock()
        chat = chat_lock(chat_id=chat.id)
        if chat.status == Chat.Status.RESOLVED:
            raise Conflict("The chat is resolved.")
        if chat.status == Chat.Status.ASSIGNED and chat.assigned_agent_id == agent.pk:
            return chat
        agent = agent_lock(agent_id=agent.pk)
        if not agent.is_online or not agent.user.is_active:
            raise Conflict("The agent is offline.")
        if agent.active_chats >= agent.max_customers:
            raise Conflict("The agent is at its max_customers.")
        now = timezone.now()  # after the count, as in assignment_run
        transferred = chat.status == Chat.Status.ASSIGNED
        if transferred and chat.assigned_agent_id is not None:
            Agent.objects.filter(pk=chat.assigned_agent_id).update(active_chats=F("active_chats") - 1)
        Assignment.objects.filter(chat=chat, ended_at__isnull=True).update(
            ended_at=now, end_reason=Assignment.EndReason.TRANSFERRED
        )
        chat.status = Chat.Status.ASSIGNED
        chat.assigned_agent_id = agent.pk
        chat.assigned_at = now
        chat.save(update_fields=["status", "assigned_agent", "assigned_at", "updated_at"])
        agent.last_assigned_at = now
        agent.active_chats += 1  # its row is locked above: no lost update
        agent.save(update_fields=["last_assigned_at", "active_chats"])
        Assignment.objects.create(chat=chat, agent=agent, reason=Assignment.Reason.MANUAL, assigned_at=now)
        report_chats_assigned(chat_ids=[chat.id], agent_ids=[agent.pk], times=[now])
        if transferred:
            assignment_schedule()
        if settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS > 0:
            # The chat's reply deadline: a run then requeues it if the agent has not written.
            deadline = now + timedelta(seconds=settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS)
            tenant_work_mark(kind=TenantWork.Kind.ASSIGNMENT, due_at=deadline)
        chats_assigned_announce([ChatAssigned(chat.id, agent.pk, chat.application_id, chat.created_at, now)])
        events_record_chats(type=CHAT_TRANSFERRED if transferred else CHAT_ASSIGNED, chat_ids=[chat.id])
        audit_record(action="chat.transferred" if transferred else "chat.assigned", target=chat, changes={"agent": agent.pk})
    return chat


def agent_active_chats(*, agent: Agent) -> int:
    """The agent's active chats counted from the chats themselves (the truth `Agent.active_chats` keeps)."""
    return Chat.objects.filter(assigned_agent_id=agent.pk, status=Chat.Status.ASSIGNED).count()


# Every agent row locked first, in id order (as the engine locks them), and only then counted, in a statement
# of its own and so with a fresh snapshot. A transaction that changed a chat and already its agent's count
# holds that agent's row: the lock waits for it to commit and the count then sees its chat. One that changed
# a chat but not yet the count is not seen by the count, and applies its delta after this commits. Either
# way the result is exact.
_ACTIVE_CHATS_LOCK = "SELECT user_id FROM agents_agent ORDER BY user_id FOR NO KEY UPDATE"
_ACTIVE_CHATS_RECOUNT = """
UPDATE agents_agent AS agent SET active_chats = counted.total
FROM (
    SELECT a.user_id, (
        SELECT count(*) FROM conversations_chat AS chat
        WHERE chat.assigned_agent_id = a.user_id AND chat.status = 'assigned'
    ) AS total
    FROM agents_agent AS a
) AS counted
WHERE agent.user_id = counted.user_id AND agent.active_chats <> counted.total
RETURNING agent.user_id
"""


def agent_active_chats_reconcile() -> list[int]:
    """Recounts every agent's active chats from the chats and fixes the stored count where it differs.

    The services keep the count exact; a difference means a chat changed by a path that bypasses them
    (a raw SQL edit, the chat's change form in the Django admin), and is logged. Returns the agents fixed.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        assignment_lock()
        cursor.execute(_ACTIVE_CHATS_LOCK)
        cursor.execute(_ACTIVE_CHATS_RECOUNT)
        fixed = [row[0] for row in cursor.fetchall()]
    if fixed:
        logger.error("active chats recounted for agents %s: a path changed chats without the services", fixed)
    return fixed


def assignment_sweep() -> int:
    """The tenant's assignment work as the dispatcher sends it (tenants.work): Agent rows for staff users
    made outside the agents API, active chats recounted, then a run (which also requeues chats past the
    reply timeout). Returns the chats assigned."""
    agents_ensure()
    agent_active_chats_reconcile()
    return assignment_run()


# The earliest reply deadline ahead: assigned chats whose agent has not written since (as _REQUEUE_TIMED_OUT).
_EARLIEST_UNANSWERED_ASSIGNMENT = """
SELECT min(chat.assigned_at) FROM conversations_chat AS chat
WHERE chat.status = 'assigned' AND NOT EXISTS (
    SELECT 1 FROM conversations_message AS m
    WHERE m.chat_id = chat.id AND m.sender = 'agent' AND m.created_at >= chat.assigned_at
)
"""


def assignment_next_due_at(*, now: datetime) -> datetime | None:
    """When the tenant's assignment work is next due, with no event to trigger it: chats still waiting (no
    free agent) are looked at again in ASSIGNMENT_SWEEP_SECONDS; chats waiting only for a closed team, when
    the first such team opens (routing); else the earliest reply deadline, if the reply timeout is on; else
    never (None)."""
    due = routing_waiting_due(at=now, sweep_at=now + timedelta(seconds=settings.ASSIGNMENT_SWEEP_SECONDS))
    timeout = settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS
    if timeout > 0:
        with prepared_cursor() as cursor:
            cursor.execute(_EARLIEST_UNANSWERED_ASSIGNMENT)
            earliest = cursor.fetchone()[0]
        if earliest is not None:
            deadline = earliest + timedelta(seconds=timeout)
            due = deadline if due is None else min(due, deadline)
    return due


def assignment_work_version() -> int | None:
    """The tenant's assignment mark as a run starts (see tenants.work.tenant_work_settle)."""
    return tenant_work_version(kind=TenantWork.Kind.ASSIGNMENT)


def assignment_work_settle(*, version: int | None) -> None:
    """Ends a run's share of the tenant's assignment mark: removed when nothing waits and no deadline is
    ahead (and no event marked it since the run started), else due at the next safety-net look."""
    tenant_work_settle(
        kind=TenantWork.Kind.ASSIGNMENT, version=version, next_due_at=assignment_next_due_at(now=timezone.now())
    )


# --- runs coalesced by a caller that commits many changes in a row (the drain) ------------------------------


class AssignmentRunsDeferred:
    """The runs asked for inside `assignment_runs_deferred`, for one tenant: `wanted` once a transaction that
    scheduled a run committed; `run()` runs it in this process and settles the mark, as the task would."""

    def __init__(self, schema_name: str) -> None:
        self.schema_name = schema_name
        self.wanted = False
        self.runs = 0

    def want(self) -> None:
        self.wanted = True

    def run(self) -> int:
        """Runs the assignment now if a change committed since the last run asked for one; returns the chats
        assigned. It reads the state when it starts, so one run serves every change committed before it."""
        if not self.wanted:
            return 0
        # Cleared before the run reads anything, as the task clears its flag: a change committed from here on
        # (even one the run itself commits) asks for the next run.
        self.wanted = False
        try:
            assigned = assignment_run(settle=True)
        except BaseException:
            self.wanted = True  # still wanted: the block's exit sends it as the task
            raise
        self.runs += 1
        return assigned


@contextmanager
def assignment_runs_deferred():
    """Within this block, `assignment_schedule` in the current tenant sends no task when its transaction
    commits: it notes that a run is wanted, and the caller runs it when it chooses (`.run()`), and in any
    case once at the end of the block. The drain uses it: a task (publish, delivery, a tenant slot, a pool
    process) per batch of chats cost more than the run itself, and the run queued behind other tenants'
    drains. Each transaction still marks the tenant's assignment work, so a run that never happens (this
    process killed) is sent by the dispatcher after TENANT_WORK_GRACE_SECONDS. If the block or its last run
    fails, the run still wanted is sent as a task, as without the block."""
    deferred = AssignmentRunsDeferred(connection.schema_name)
    token = deferred_runs.set(deferred)
    try:
        yield deferred
    except BaseException:
        deferred_runs.reset(token)
        _deferred_run_send(deferred)
        raise
    deferred_runs.reset(token)
    try:
        deferred.run()
    except BaseException:
        _deferred_run_send(deferred)
        raise


def _deferred_run_send(deferred: AssignmentRunsDeferred) -> None:
    if not deferred.wanted:
        return
    try:
        _assignment_run_schedule(deferred.schema_name)
    except Exception:
        # Redis away too: the tenant's mark, committed with the change, has the dispatcher send it.
        logger.warning("assignment run not sent; the dispatcher sends it once the mark is due", exc_info=True)
