"""Agents (availability, capacity) and the assignment engine: who gets which waiting chat, and when.

Rules (PRODUCT.md, "Asynchronous work"):
- waiting chats are served strictly in arrival order: `created_at`, then application, then number;
- an agent is eligible when it is online, its user active, and it holds fewer assigned (unresolved) chats
  than its `max_customers`;
- the eligible agent with the fewest active chats wins; ties go to the one whose last assignment is the
  oldest (never assigned first), then to the lowest id.

Every change that can make an assignment possible schedules a run (`assignment_schedule`): a batch of
chats persisted, an agent going online or gaining capacity, a chat resolved or transferred. The same call
marks the tenant's `assignment` work in the due-work index (tenants.work), in the change's transaction: if
the run's task is lost, the dispatcher sends one. Each run settles that mark at its end
(`assignment_work_settle`): kept while chats wait for a free agent or a reply deadline is ahead, so the
safety net costs only tenants that have such work.
"""

import heapq
import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django_tenants.utils import schema_context

from agents.models import Agent, AllocationSettings, Assignment
from conversations.access import chat_access_check
from conversations.models import Application, Chat
from core.exceptions import ConflictError
from core.models import User
from core.redis import get_redis, tenant_key
from core.services import user_create, user_last_admin_check
from tenants.models import TenantWork
from tenants.work import tenant_work_mark, tenant_work_settle, tenant_work_soon, tenant_work_version

logger = logging.getLogger(__name__)

STAFF_ROLES = (User.Role.ADMIN, User.Role.AGENT)
# Arbitrary first key of our advisory locks ("SM"); the second is a hash of the tenant's schema name.
_ADVISORY_LOCK_CLASS = 0x534D
# A run that was scheduled but has not started within this many seconds is assumed lost: the next event
# schedules another (and the dispatcher sends one once the tenant's mark comes due).
_SCHEDULED_TTL_SECONDS = 30
_NEVER = datetime.min.replace(tzinfo=UTC)


# --- settings and agents ------------------------------------------------------------------------------------


def allocation_settings_get() -> AllocationSettings:
    """The tenant's allocation settings row, created on first use."""
    row, _ = AllocationSettings.objects.get_or_create(id=AllocationSettings.SINGLETON_ID)
    return row


def agent_for_user(*, user: User) -> Agent:
    """The user's Agent row, created (offline, tenant default capacity) if the user never had one."""
    agent = Agent.objects.filter(user=user).first()
    if agent is None:
        agents_ensure()
        agent = Agent.objects.get(user=user)
    return agent


def agents_ensure() -> int:
    """Gives every admin and agent of this tenant an Agent row (offline, default capacity) if it has none.

    Users made by the agents API get theirs at once; this covers the others (the tenant's first admin,
    users added in the Django admin). Idempotent and cheap; returns the rows added.
    """
    default = allocation_settings_get().default_max_customers
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO agents_agent (user_id, is_online, max_customers, qiscus_agent_id)
            SELECT id, false, %s, '' FROM core_user WHERE role = ANY(%s)
            ON CONFLICT (user_id) DO NOTHING
            """,
            [default, list(STAFF_ROLES)],
        )
        return cursor.rowcount


def agent_access_check(*, agent: Agent, user: User, fields: set[str]) -> None:
    """Who may change an agent: an admin any field, an agent only its own `is_online` (PermissionDenied).
    Used by the agents API and by the tenant admin's agent pages and actions."""
    if user.is_tenant_admin:
        return
    if agent.pk != user.id or set(fields) - {"is_online"}:
        raise PermissionDenied("Agents may only set their own is_online.")


def agent_create(
    *,
    email: str,
    password: str,
    name: str = "",
    role: str = User.Role.AGENT,
    max_customers: int | None = None,
    is_online: bool = False,
) -> Agent:
    """Creates a tenant user and its Agent in one transaction (a refused email or password writes nothing)."""
    if role not in STAFF_ROLES:
        raise ValidationError({"role": [f"Must be one of: {', '.join(STAFF_ROLES)}."]})
    with transaction.atomic():
        user = user_create(email=email, password=password, role=role, name=name)
        agent = Agent.objects.create(
            user=user,
            is_online=is_online,
            max_customers=allocation_settings_get().default_max_customers if max_customers is None else max_customers,
        )
        if is_online:
            assignment_schedule()
    return agent


def agent_update(
    *,
    agent: Agent,
    name: str | None = None,
    role: str | None = None,
    max_customers: int | None = None,
    is_online: bool | None = None,
) -> Agent:
    """Edits an agent; going online or gaining capacity schedules an assignment run. Demoting the tenant's
    last active admin is refused (ConflictError, 409)."""
    if role is not None and role not in STAFF_ROLES:
        raise ValidationError({"role": [f"Must be one of: {', '.join(STAFF_ROLES)}."]})
    with transaction.atomic():
        if role is not None:
            # Before the agent's row (admins' user rows, then the agent: one order for every caller).
            user_last_admin_check(user_id=agent.pk, remains_admin=role == User.Role.ADMIN)
        # Locked: a concurrent edit or assignment run sees this change whole or not at all.
        agent = Agent.objects.select_for_update(no_key=True).select_related("user").get(pk=agent.pk)
        will_be_online = agent.is_online if is_online is None else is_online
        more_room = will_be_online and (
            not agent.is_online or (max_customers is not None and max_customers > agent.max_customers)
        )
        agent_fields = []
        if is_online is not None and is_online != agent.is_online:
            agent.is_online = is_online
            agent_fields.append("is_online")
        if max_customers is not None and max_customers != agent.max_customers:
            agent.max_customers = max_customers
            agent_fields.append("max_customers")
        if agent_fields:
            agent.save(update_fields=agent_fields)
        user_fields = []
        if name is not None and name != agent.user.name:
            agent.user.name = name
            user_fields.append("name")
        if role is not None and role != agent.user.role:
            agent.user.role = role
            # Admins use the tenant's Django admin; agents the API only (as core.services.user_create does).
            agent.user.is_staff = agent.user.is_superuser = role == User.Role.ADMIN
            user_fields += ["role", "is_staff", "is_superuser"]
        if user_fields:
            agent.user.save(update_fields=user_fields)
        if more_room:
            assignment_schedule()
    return agent


def agent_set_online(*, agent: Agent, is_online: bool) -> Agent:
    """Puts an agent on- or offline. Going offline keeps its current chats; it just gets no new ones."""
    return agent_update(agent=agent, is_online=is_online)


# --- scheduling runs ---------------------------------------------------------------------------------------


def _scheduled_key() -> str:
    return tenant_key(connection.schema_name, "assignment", "scheduled")


def _assignment_task_send(schema_name: str) -> None:
    from agents.tasks import assignment_run_task
    from tenants.queues import task_wake

    with schema_context(schema_name):
        # One queued run is enough: it reads the state when it starts, after everything committed before
        # this point. The run clears the flag first thing, so events after that schedule another.
        if get_redis().set(_scheduled_key(), 1, nx=True, ex=_SCHEDULED_TTL_SECONDS):
            task_wake(assignment_run_task)  # the chats wait in the table; the sweep runs it if the broker is away


def assignment_schedule() -> None:
    """Runs the assignment for this tenant once the current transaction commits (at most one queued run).

    Also marks the tenant's assignment work, in the current transaction: the run settles it, and if the
    run is never sent or lost, the dispatcher sends one TENANT_WORK_GRACE_SECONDS later.
    """
    schema_name = connection.schema_name
    tenant_work_mark(kind=TenantWork.Kind.ASSIGNMENT, due_at=tenant_work_soon())
    deferred = _deferred_runs.get()
    if deferred is not None and deferred.schema_name == schema_name:
        transaction.on_commit(deferred.want)  # the caller runs it (assignment_runs_deferred)
        return
    transaction.on_commit(lambda: _assignment_task_send(schema_name))


def assignment_scheduled_clear() -> None:
    get_redis().delete(_scheduled_key())


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
            version = assignment_work_version()
            assigned = assignment_run()
            assignment_work_settle(version=version)
        except BaseException:
            self.wanted = True  # still wanted: the block's exit sends it as the task
            raise
        self.runs += 1
        return assigned


_deferred_runs: ContextVar[AssignmentRunsDeferred | None] = ContextVar("assignment_runs_deferred", default=None)


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
    token = _deferred_runs.set(deferred)
    try:
        yield deferred
    except BaseException:
        _deferred_runs.reset(token)
        _deferred_run_send(deferred)
        raise
    _deferred_runs.reset(token)
    try:
        deferred.run()
    except BaseException:
        _deferred_run_send(deferred)
        raise


def _deferred_run_send(deferred: AssignmentRunsDeferred) -> None:
    if not deferred.wanted:
        return
    try:
        _assignment_task_send(deferred.schema_name)
    except Exception:
        # Redis away too: the tenant's mark, committed with the change, has the dispatcher send it.
        logger.warning("assignment run not sent; the dispatcher sends it once the mark is due", exc_info=True)


# --- the engine --------------------------------------------------------------------------------------------


def _lock_tenant_assignment(cursor) -> None:
    # Why one lock per tenant rather than row locks or SKIP LOCKED: an assignment is a decision over the
    # whole queue and the whole pool of agents at once. With SKIP LOCKED, a second worker would skip the
    # head chat its neighbour holds and assign the next one (FIFO broken if the neighbour then fails), and
    # two workers could both count an agent at 1 of 2 and both give it a chat (limit broken). Serialising
    # runs per tenant makes every rule hold by construction, and costs little because one run assigns a
    # whole batch per statement (1,000s a second). A transaction-level advisory lock is released by
    # COMMIT/ROLLBACK and by a dead connection, so a killed worker never leaves it held. Advisory locks are
    # database-wide: the key includes the schema, so tenants never wait for one another (a hash collision
    # would only serialise two tenants, never break a rule).
    _advisory_xact_lock(cursor, f"assignment:{connection.schema_name}")


def _advisory_xact_lock(cursor, name: str) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_ADVISORY_LOCK_CLASS, name])


# Assigned chats whose agent is gone: its user deleted (the chat's agent set to null) or deactivated (it
# can no longer sign in to answer). Two lookups in indexes on the agent, so that a run costs the same with
# 100 or 100,000 assigned chats (an OR of the two made PostgreSQL read every assigned chat). Returns each
# chat's agent, whose active chats go down; the status is re-checked on the row, so a chat resolved
# meanwhile is left alone.
_REQUEUE_ORPHANS = """
UPDATE conversations_chat AS chat
SET status = 'waiting', assigned_agent_id = NULL, assigned_at = NULL, updated_at = %s
FROM (
    SELECT id, assigned_agent_id FROM conversations_chat WHERE assigned_agent_id IS NULL AND status = 'assigned'
    UNION ALL
    SELECT chat.id, chat.assigned_agent_id
    FROM core_user AS u JOIN conversations_chat AS chat ON chat.assigned_agent_id = u.id
    WHERE NOT u.is_active AND chat.status = 'assigned'
) AS gone
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
_ELIGIBLE_AGENTS = """
SELECT agent.user_id, agent.max_customers, agent.last_assigned_at, agent.active_chats
FROM agents_agent AS agent JOIN core_user AS u ON u.id = agent.user_id
WHERE agent.is_online AND u.is_active AND agent.max_customers > 0
ORDER BY agent.user_id
FOR NO KEY UPDATE OF agent
"""

# The head of the queue. Locked so that a concurrent resolve of a waiting chat waits for this run.
_WAITING_HEAD = """
SELECT id, application_id, created_at FROM conversations_chat
WHERE status = 'waiting'
ORDER BY created_at, application_id, number
LIMIT %s
FOR UPDATE
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
    cursor.execute(_REQUEUE_ORPHANS, [now])
    orphans = cursor.fetchall()
    if orphans:
        cursor.execute(_CLOSE_STINTS, [now, Assignment.EndReason.REQUEUED, [chat_id for chat_id, _ in orphans]])
        _active_chats_add(cursor, agent_ids=[agent_id for _, agent_id in orphans], delta=-1)
        logger.warning("requeued %s chats whose agent was deleted or deactivated", len(orphans))
    timeout = settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS
    if timeout > 0:
        cursor.execute(_REQUEUE_TIMED_OUT, {"now": now, "cutoff": now - timedelta(seconds=timeout)})
        timed_out = cursor.fetchall()
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


def _pick(heap: list, *, avoid: int | None) -> tuple | None:
    """Pops the best agent entry, passing over `avoid` when another agent is eligible."""
    if not heap:
        return None
    best = heapq.heappop(heap)
    if best[2] != avoid or not heap:
        return best
    second = heapq.heappop(heap)
    heapq.heappush(heap, best)
    return second


def assignment_run(*, batch_size: int | None = None) -> int:
    """Assigns waiting chats to eligible agents, oldest chat first, until the queue or the capacity runs out.

    One transaction under the tenant's assignment lock (see `_lock_tenant_assignment`): eligible agents and
    their active counts are read once, the choices are made in memory (a heap ordered by active chats, then
    last assignment), and each round of `batch_size` chats is written with three statements. Returns the
    number of chats assigned.
    """
    batch_size = batch_size or settings.ASSIGNMENT_BATCH_SIZE
    qiscus_application_id = allocation_settings_get().qiscus_application_id
    qiscus_assigned: list[tuple[int, int]] = []
    assigned = 0
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_tenant_assignment(cursor)
        _requeue(cursor, now=timezone.now())

        cursor.execute(_ELIGIBLE_AGENTS)
        agents = cursor.fetchall()
        if not agents:
            return 0
        # Heap entries: (active chats, last assigned at (never first), agent id, free slots).
        heap = []
        for agent_id, max_customers, last_assigned_at, count in agents:
            if count < max_customers:
                heap.append((count, last_assigned_at or _NEVER, agent_id, max_customers - count))
        heapq.heapify(heap)

        # Each assignment gets its own microsecond, so assignment times (and the tie-break on them) follow
        # the order in which the chats were served, even within one batch and across batches.
        at = _NEVER
        while heap:
            capacity = sum(entry[3] for entry in heap)
            requested = min(batch_size, capacity)
            cursor.execute(_WAITING_HEAD, [requested])
            head = cursor.fetchall()
            if not head:
                break
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
            chat_ids, agent_ids, times = [], [], []
            last_touch: dict[int, datetime] = {}
            added: dict[int, int] = {}
            for chat_id, application_id, created_at in head:
                entry = _pick(heap, avoid=avoid.get(chat_id))
                if entry is None:
                    break
                count, _, agent_id, free = entry
                at = max(at + timedelta(microseconds=1), created_at)
                chat_ids.append(chat_id)
                agent_ids.append(agent_id)
                times.append(at)
                last_touch[agent_id] = at
                added[agent_id] = added.get(agent_id, 0) + 1
                if free > 1:
                    heapq.heappush(heap, (count + 1, at, agent_id, free - 1))
                if application_id == qiscus_application_id:
                    qiscus_assigned.append((chat_id, agent_id))
            if not chat_ids:
                break
            cursor.execute(_ASSIGN_CHATS, [chat_ids, agent_ids, times])
            cursor.execute(_TOUCH_AGENTS, [list(last_touch), list(last_touch.values()), [added[a] for a in last_touch]])
            cursor.execute(_LOG_STINTS, [Assignment.Reason.QUEUE, chat_ids, agent_ids, times])
            assigned += len(chat_ids)
            if len(head) < requested:
                # The queue ran dry. Chats arriving from now on schedule a run of their own; looping for
                # them here would keep this transaction (and the tenant's lock) open while they keep coming,
                # and none of its assignments would be visible until arrivals stopped.
                break
        if qiscus_assigned:
            _qiscus_sync_on_commit(qiscus_assigned)
    if assigned:
        logger.info("assigned %s chats", assigned)
    return assigned


# --- resolve and manual assignment -----------------------------------------------------------------------


def chat_resolve(*, chat: Chat, by: User | None = None) -> Chat:
    """Resolves a chat (by its assigned agent, an admin, or the system when `by` is None) and, if it held
    an agent's capacity, schedules the run that serves the next waiting chat.

    Raises PermissionDenied for another agent, ConflictError if the chat is already resolved.
    """
    with transaction.atomic():
        chat = Chat.objects.select_for_update().get(id=chat.id)
        # Checked on the locked row: an assignee changed since the view read the chat is seen here.
        chat_access_check(chat=chat, user=by, action="resolve it")
        if chat.status == Chat.Status.RESOLVED:
            raise ConflictError("The chat is already resolved.")
        held_capacity = chat.status == Chat.Status.ASSIGNED
        now = timezone.now()
        chat.status = Chat.Status.RESOLVED
        chat.resolved_at = now
        chat.save(update_fields=["status", "resolved_at", "updated_at"])
        Assignment.objects.filter(chat=chat, ended_at__isnull=True).update(
            ended_at=now, end_reason=Assignment.EndReason.RESOLVED
        )
        if held_capacity:
            # After the chat's row lock, as every path takes them (chat, then agent): waits for a running
            # assignment to commit, never deadlocks with it.
            Agent.objects.filter(pk=chat.assigned_agent_id).update(active_chats=F("active_chats") - 1)
            assignment_schedule()
    return chat


def chat_assign(*, chat: Chat, agent: Agent) -> Chat:
    """Gives a chat to a chosen agent (an admin's manual assignment, or a transfer of an assigned chat).

    The agent must be online and below its limit (ConflictError otherwise): the capacity rule holds for
    admins too. Runs under the tenant's assignment lock, so it never races the engine. A transfer frees
    the previous agent's slot, which schedules a run.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_tenant_assignment(cursor)
        chat = Chat.objects.select_for_update().get(id=chat.id)
        if chat.status == Chat.Status.RESOLVED:
            raise ConflictError("The chat is resolved.")
        if chat.status == Chat.Status.ASSIGNED and chat.assigned_agent_id == agent.pk:
            return chat
        agent = Agent.objects.select_for_update(no_key=True).select_related("user").get(pk=agent.pk)
        if not agent.is_online or not agent.user.is_active:
            raise ConflictError("The agent is offline.")
        if agent.active_chats >= agent.max_customers:
            raise ConflictError("The agent is at its max_customers.")
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
        if transferred:
            assignment_schedule()
        if settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS > 0:
            # The chat's reply deadline: a run then requeues it if the agent has not written.
            deadline = now + timedelta(seconds=settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS)
            tenant_work_mark(kind=TenantWork.Kind.ASSIGNMENT, due_at=deadline)
        if chat.application_id == allocation_settings_get().qiscus_application_id:
            _qiscus_sync_on_commit([(chat.id, agent.pk)])
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
        _lock_tenant_assignment(cursor)
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
    free agent) are looked at again in ASSIGNMENT_SWEEP_SECONDS; else the earliest reply deadline, if the
    reply timeout is on; else never (None)."""
    if Chat.objects.filter(status=Chat.Status.WAITING).exists():
        return now + timedelta(seconds=settings.ASSIGNMENT_SWEEP_SECONDS)
    timeout = settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS
    if timeout > 0:
        with connection.cursor() as cursor:
            cursor.execute(_EARLIEST_UNANSWERED_ASSIGNMENT)
            earliest = cursor.fetchone()[0]
        if earliest is not None:
            return earliest + timedelta(seconds=timeout)
    return None


def assignment_work_version() -> int | None:
    """The tenant's assignment mark as a run starts (see tenants.work.tenant_work_settle)."""
    return tenant_work_version(kind=TenantWork.Kind.ASSIGNMENT)


def assignment_work_settle(*, version: int | None) -> None:
    """Ends a run's share of the tenant's assignment mark: removed when nothing waits and no deadline is
    ahead (and no event marked it since the run started), else due at the next safety-net look."""
    tenant_work_settle(
        kind=TenantWork.Kind.ASSIGNMENT, version=version, next_due_at=assignment_next_due_at(now=timezone.now())
    )


# --- Qiscus ----------------------------------------------------------------------------------------------


def qiscus_is_configured() -> bool:
    return bool(settings.QISCUS_BASE_URL and settings.QISCUS_APP_ID and settings.QISCUS_SECRET_KEY)


def _qiscus_sync_on_commit(pairs: list[tuple[int, int]]) -> None:
    if not qiscus_is_configured():
        return
    schema_name = connection.schema_name

    def send() -> None:
        from agents.tasks import qiscus_assign_agent_task

        with schema_context(schema_name):
            for chat_id, agent_id in pairs:
                qiscus_assign_agent_task.delay(chat_id, agent_id)

    transaction.on_commit(send)


def qiscus_application_get() -> Application:
    """The application holding this tenant's Qiscus rooms, created on first use."""
    with transaction.atomic():
        allocation_settings_get()
        row = AllocationSettings.objects.select_for_update().get(id=AllocationSettings.SINGLETON_ID)
        if row.qiscus_application_id is None:
            row.qiscus_application = Application.objects.create(name="Qiscus")
            row.save(update_fields=["qiscus_application"])
        return row.qiscus_application


def qiscus_agent_learn(*, qiscus_agent: dict | None) -> None:
    """Remembers which Qiscus agent id an agent has, matched by email, for the assign_agent call."""
    if not isinstance(qiscus_agent, dict):
        return
    email, agent_id = qiscus_agent.get("email"), qiscus_agent.get("id")
    if not email or agent_id in (None, ""):
        return
    if len(str(agent_id)) > Agent._meta.get_field("qiscus_agent_id").max_length:
        return  # no id Qiscus hands out (they are numbers); the allocation or resolve goes on without it
    Agent.objects.filter(user__email=str(email).strip().lower()).exclude(qiscus_agent_id=str(agent_id)).update(
        qiscus_agent_id=str(agent_id)
    )


def _qiscus_room_key(room_id: str) -> str:
    return tenant_key(connection.schema_name, "qiscus", "room", room_id)


def qiscus_room_allocate(*, room_id: str, candidate_agent: dict | None = None) -> tuple[Application, int, bool]:
    """Qiscus asks for an agent for `room_id`: the room joins the FIFO queue as a waiting chat of the Qiscus
    application (customer_id = room id), through the normal creation path.

    Qiscus repeats the request for every customer message until the room has an agent, so a room with an
    open chat (waiting or assigned, or still queued for persistence) gets that chat back instead of a new
    one. Returns (application, chat number, created).
    """
    from conversations.services import chat_create

    application = qiscus_application_get()
    qiscus_agent_learn(qiscus_agent=candidate_agent)
    redis = get_redis()
    with transaction.atomic(), connection.cursor() as cursor:
        # One allocation per room at a time (the decision below reads, then creates).
        _advisory_xact_lock(cursor, f"qiscus:{connection.schema_name}:{room_id}")
        open_chat = (
            Chat.objects.filter(application=application, customer_id=room_id)
            .filter(status__in=[Chat.Status.WAITING, Chat.Status.ASSIGNED])
            .order_by("-number")
            .first()
        )
        if open_chat is not None:
            return application, open_chat.number, False
        queued = redis.get(_qiscus_room_key(room_id))
        if queued is not None and not Chat.objects.filter(application=application, number=int(queued)).exists():
            return application, int(queued), False  # created, not yet persisted
        number = chat_create(application=application, customer_id=room_id)
        redis.set(_qiscus_room_key(room_id), number, ex=24 * 3600)
    return application, number, True


# How long a mark-as-resolved waits for its room's chat, allocated but still queued, to be persisted before
# answering 409 (the resolve then completes in a task). The drain normally persists within milliseconds.
QISCUS_RESOLVE_WAIT_SECONDS = 2.0


class QiscusChatNotPersisted(Exception):
    """The room's chat is allocated but not persisted yet: the resolve task retries."""


def qiscus_room_resolve(*, room_id: str, resolved_by: dict | None = None) -> Chat | None:
    """Qiscus marked the room resolved: resolves its open chat (or answers its latest, already resolved)
    and serves the next waiting chat. None when no chat of this room exists.

    Qiscus often resolves a room right after asking for its allocation, while the room's chat is still
    queued for persistence (its number allocated, its row not written). Left alone, that chat would be
    persisted as waiting and later take an agent's slot. So the resolve waits up to
    QISCUS_RESOLVE_WAIT_SECONDS for the row; if it is still not there, it schedules
    `qiscus_room_resolve_task` (which resolves the chat once its row exists, retrying until then) and raises
    ConflictError with a Retry-After: the chat ends resolved either way.
    """
    application = qiscus_application_get()
    qiscus_agent_learn(qiscus_agent=resolved_by)
    chat = Chat.objects.filter(application=application, customer_id=room_id).order_by("-number").first()
    queued = get_redis().get(_qiscus_room_key(room_id))
    if queued is not None and (chat is None or chat.number < int(queued)):
        chat = _qiscus_chat_wait(application=application, number=int(queued))
        if chat is None:
            qiscus_room_resolve_schedule(room_id=room_id, chat_number=int(queued))
            error = ConflictError("The room's chat is still being created; it will be resolved as soon as it exists.")
            error.wait = 1  # Retry-After (DRF's exception handler): a repeat then finds it resolved
            raise error
    if chat is None:
        return None
    return _qiscus_chat_resolve(chat)


def _qiscus_chat_wait(*, application: Application, number: int) -> Chat | None:
    deadline = time.monotonic() + QISCUS_RESOLVE_WAIT_SECONDS
    while True:
        chat = Chat.objects.filter(application=application, number=number).first()
        if chat is not None or time.monotonic() >= deadline:
            return chat
        time.sleep(0.05)


def _qiscus_chat_resolve(chat: Chat) -> Chat:
    if chat.status == Chat.Status.RESOLVED:
        return chat  # Qiscus may deliver a webhook twice: nothing more to do
    try:
        return chat_resolve(chat=chat)
    except ConflictError:
        return Chat.objects.get(id=chat.id)


def qiscus_room_resolve_schedule(*, room_id: str, chat_number: int) -> None:
    """Sends `qiscus_room_resolve_task` for the room's queued chat, in this tenant's context."""
    from agents.tasks import qiscus_room_resolve_task

    qiscus_room_resolve_task.delay(room_id, chat_number)


def qiscus_queued_chat_resolve(*, room_id: str, chat_number: int) -> Chat:
    """Resolves the room's chat `chat_number` once it is persisted (QiscusChatNotPersisted until then).
    Idempotent: an already resolved chat is returned as it is."""
    application = qiscus_application_get()
    chat = Chat.objects.filter(application=application, number=chat_number, customer_id=room_id).first()
    if chat is None:
        raise QiscusChatNotPersisted(f"chat {chat_number} of Qiscus room {room_id} is not persisted yet")
    return _qiscus_chat_resolve(chat)


class QiscusTransientError(Exception):
    """Qiscus answered 429 or 5xx: worth retrying."""


def qiscus_agent_assign(*, chat_id: int, agent_id: int) -> bool:
    """Assigns the chat's agent to its room in Qiscus (`POST /api/v1/admin/service/assign_agent`).

    Does nothing (False) if the chat has since been resolved or given to someone else (that change sends
    its own call), or if the agent's Qiscus id is unknown. Raises QiscusTransientError or a requests
    connection/timeout error for the task to retry; other refusals are logged and not retried.
    """
    import requests  # pinned in requirements.txt for outbound webhooks; the same reasons hold here

    chat = Chat.objects.filter(id=chat_id).first()
    if chat is None or chat.status != Chat.Status.ASSIGNED or chat.assigned_agent_id != agent_id:
        return False
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None or not agent.qiscus_agent_id:
        logger.warning("chat %s: agent %s has no known Qiscus id; not assigned in Qiscus", chat_id, agent_id)
        return False
    response = requests.post(
        f"{settings.QISCUS_BASE_URL.rstrip('/')}/api/v1/admin/service/assign_agent",
        data={"room_id": chat.customer_id, "agent_id": agent.qiscus_agent_id},
        headers={"Qiscus-App-Id": settings.QISCUS_APP_ID, "Qiscus-Secret-Key": settings.QISCUS_SECRET_KEY},
        timeout=settings.QISCUS_TIMEOUT_SECONDS,
        allow_redirects=False,
    )
    if response.status_code == 429 or response.status_code >= 500:
        raise QiscusTransientError(f"Qiscus answered {response.status_code}")
    if response.status_code >= 400:
        logger.error(
            "Qiscus refused assign_agent for room %s: %s %s", chat.customer_id, response.status_code, response.text[:500]
        )
        return False
    return True
