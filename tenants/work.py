"""The due-work index: which tenant has which background work, and when it is due.

PRODUCT.md, "Scale: many tenants": a tenant that does nothing costs nothing. So no periodic task visits
every tenant; instead the places that make work mark it, and one periodic dispatcher (beat entry
`tenant-work-dispatch`) sends each kind's task to just the tenants whose work is due, in the tenant's
context (its schema, its queue).

Two indexes, each kept where its work is made:

- `tenants.TenantWork` (public schema), for work whose trigger is a database change: `assignment` (a chat
  became waiting or was requeued, an agent came online or gained capacity, a reply deadline),
  `outbound` (a pending message, a retry's next attempt, the job started or its interval changed) and
  `counts` (the tenant had creations: recount within COUNTS_RECONCILE_SECONDS). `tenant_work_mark` upserts
  the row in the caller's transaction: the earliest due_at wins and `version` goes up.
- A Redis sorted set (`CREATIONS_ACTIVE_KEY`) of schema names, added by the creation scripts themselves
  (conversations.creations) when the tenant is not there yet, re-scored by each drain batch (a heartbeat),
  and cleared by the drain in the same step as it finds the tenant's list empty. An entry older than
  CREATIONS_SWEEP_SECONDS means creations wait and no drain made progress for that long: it died.

The dispatcher claims due rows with `FOR UPDATE SKIP LOCKED LIMIT n` and pushes them TENANT_WORK_LEASE_SECONDS
ahead (a task that is lost comes due again); then sends. A kind's task reads the row's version when it
starts and settles it when it ends (`tenant_work_settle`): deleted if nothing is left and no mark arrived
meanwhile, else moved to the next due time. Idle cost: one indexed query and one ZRANGEBYSCORE-like script.
"""

import logging
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from core.prepared import prepared_cursor
from core.redis import get_redis, redis_script_load
from tenants.models import TenantWork

logger = logging.getLogger(__name__)

Kind = TenantWork.Kind

# The task each kind's dispatch sends, in the tenant's context. Assignment sends the sweep task: besides a
# run it gives staff users made outside the agents API their Agent rows and recounts active chats.
KIND_TASKS = {
    Kind.ASSIGNMENT: "agents.tasks.assignment_sweep_task",
    Kind.OUTBOUND: "scheduler.tasks.outbound_send_due_task",
    Kind.COUNTS: "conversations.tasks.counts_reconcile_task",
    Kind.WEBHOOKS: "events.tasks.webhook_deliveries_send_task",
    Kind.EVENTS_RETENTION: "events.tasks.events_retention_task",
    Kind.SLA: "routing.tasks.sla_breaches_check_task",
}
CREATIONS_DRAIN_TASK = "conversations.tasks.creations_persist_task"

# A platform key (not under one tenant's prefix): schema name -> when it last queued a creation (Redis time,
# seconds). Beside `sociomile:_closed-tenants:*`, the other platform-wide keys.
CREATIONS_ACTIVE_KEY = "sociomile:_active-tenants:creations"

# tenants/scripts/creations_claim.lua: the tenants whose drain is overdue, re-scored in the same step.
_CREATIONS_CLAIM = Path(__file__).resolve().parent / "scripts" / "creations_claim.lua"

_MARK = """
INSERT INTO {table} (tenant_id, kind, due_at, version)
SELECT id, %(kind)s, %(due_at)s, 1 FROM {tenants} WHERE schema_name = %(schema_name)s
ON CONFLICT (tenant_id, kind) DO UPDATE
SET due_at = {due_at}, version = work.version + 1
"""

# Several kinds at once (tenant_work_marks_batched), in the order of their kind: two transactions marking the
# same kinds lock the rows in the same order.
_MARK_MANY = """
INSERT INTO {table} (tenant_id, kind, due_at, version)
SELECT tenant.id, mark.kind, mark.due_at, 1
FROM {tenants} AS tenant, unnest(%(kinds)s::text[], %(due_ats)s::timestamptz[]) AS mark(kind, due_at)
WHERE tenant.schema_name = %(schema_name)s
ORDER BY mark.kind
ON CONFLICT (tenant_id, kind) DO UPDATE
SET due_at = LEAST(work.due_at, EXCLUDED.due_at), version = work.version + 1
"""

# The marks being collected by tenant_work_marks_batched in this thread: (schema name, {kind: earliest due}).
_batched_marks: ContextVar[tuple[str, dict[str, datetime]] | None] = ContextVar("tenant_work_batched_marks", default=None)

_VERSION = """
SELECT work.version FROM {table} JOIN {tenants} AS tenant ON tenant.id = work.tenant_id
WHERE tenant.schema_name = %(schema_name)s AND work.kind = %(kind)s
"""

_SETTLE_DELETE = """
DELETE FROM {table} USING {tenants} AS tenant
WHERE tenant.id = work.tenant_id AND tenant.schema_name = %(schema_name)s AND work.kind = %(kind)s
  AND work.version = %(version)s
"""

_CLEAR = """
DELETE FROM {table} USING {tenants} AS tenant
WHERE tenant.id = work.tenant_id AND tenant.schema_name = %(schema_name)s AND work.kind = %(kind)s
"""

_SETTLE_MOVE = """
UPDATE {table} SET due_at = %(due_at)s FROM {tenants} AS tenant
WHERE tenant.id = work.tenant_id AND tenant.schema_name = %(schema_name)s AND work.kind = %(kind)s
  AND work.version = %(version)s
"""

# Due rows, earliest first, locked (SKIP LOCKED: two dispatchers, or a mark holding a row, never make one
# wait) and pushed a lease ahead in the same statement: one round trip, and nothing claimed twice.
_CLAIM = """
WITH due AS (
    SELECT id FROM {table_plain} WHERE due_at <= %(now)s ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
UPDATE {table} SET due_at = %(lease_until)s
FROM due, {tenants} AS tenant
WHERE work.id = due.id AND tenant.id = work.tenant_id
RETURNING tenant.schema_name, work.kind
"""


def _sql(template: str, **extra: str) -> str:
    # Named with the public schema: from a tenant's connection the search path would find them too, but an
    # explicit name never depends on a tenant schema lacking a table of the same name.
    public = connection.ops.quote_name(get_public_schema_name())
    return template.format(
        table=f"{public}.tenants_tenantwork AS work",
        table_plain=f"{public}.tenants_tenantwork",
        tenants=f"{public}.tenants_tenant",
        **extra,
    )


def _current_schema_name() -> str:
    schema_name = connection.schema_name
    if schema_name == get_public_schema_name():
        raise RuntimeError("Tenant work is marked and settled inside a tenant's schema.")
    return schema_name


def tenant_work_mark(*, kind: str, due_at: datetime, replace: bool = False) -> None:
    """Records that the current tenant has work of `kind` due at `due_at`, in the caller's transaction.

    The earliest due time wins (a mark never postpones work already due), unless `replace`: the caller
    knows the new time is the only right one (the outbound job's countdown restarted by a new interval).
    The row stays locked until the caller commits: mark last in a transaction, after its other row locks,
    so that two transactions never wait for each other through it.
    """
    batched = _batched_marks.get()
    if batched is not None and not replace and batched[0] == _current_schema_name():
        marks = batched[1]
        marks[kind] = min(due_at, marks.get(kind, due_at))
        return
    due = "%(due_at)s" if replace else "LEAST(work.due_at, EXCLUDED.due_at)"
    with prepared_cursor() as cursor:
        cursor.execute(
            _sql(_MARK, due_at=due),
            {"kind": kind, "due_at": due_at, "schema_name": _current_schema_name()},
        )


@contextmanager
def tenant_work_marks_batched():
    """Collects the current tenant's marks made inside the block and writes them in one statement when the
    block ends without an error, still in the caller's transaction: the drain's batch marks two or three
    kinds, one round trip instead of one each. Each kind keeps its earliest due time and its version goes up
    once, as separate marks would leave it. Use it around a transaction's last steps only: the rows are
    locked when the block ends, which must stay after the transaction's other row locks (tenant_work_mark).
    """
    schema_name = _current_schema_name()
    marks: dict[str, datetime] = {}
    reset = _batched_marks.set((schema_name, marks))
    try:
        yield
    finally:
        _batched_marks.reset(reset)
    if marks:
        kinds = sorted(marks)
        with prepared_cursor() as cursor:
            cursor.execute(
                _sql(_MARK_MANY),
                {"kinds": kinds, "due_ats": [marks[kind] for kind in kinds], "schema_name": schema_name},
            )


def tenant_work_marks_batching() -> bool:
    """Whether the current tenant's marks are being collected by tenant_work_marks_batched (a drain batch)."""
    batched = _batched_marks.get()
    return batched is not None and batched[0] == _current_schema_name()


def tenant_work_soon() -> datetime:
    """When a mark whose work was also sent a task directly is due: that task normally settles the row
    first, and the dispatcher only acts if it was lost (TENANT_WORK_GRACE_SECONDS later)."""
    return timezone.now() + timedelta(seconds=settings.TENANT_WORK_GRACE_SECONDS)


def tenant_work_version(*, kind: str) -> int | None:
    """The current tenant's row version for `kind` (None: no row). A task reads it when it starts."""
    with prepared_cursor() as cursor:
        cursor.execute(_sql(_VERSION), {"kind": kind, "schema_name": _current_schema_name()})
        row = cursor.fetchone()
    return row[0] if row else None


def tenant_work_settle(*, kind: str, version: int | None, next_due_at: datetime | None) -> None:
    """Ends a task of `kind` for the current tenant: what is left of the work decides the row.

    Nothing left (`next_due_at` None): the row is deleted, but only if its version is still `version`, the
    one the task read when it started; a mark that arrived while the task ran keeps the row (its work may
    not have been seen). Something left: the row is due at `next_due_at` (made if the task started without
    one). Under the same version condition: a mark made meanwhile keeps its own, earlier due time.
    """
    params = {"kind": kind, "schema_name": _current_schema_name(), "version": version, "due_at": next_due_at}
    with prepared_cursor() as cursor:
        if next_due_at is None:
            if version is not None:
                cursor.execute(_sql(_SETTLE_DELETE), params)
            return
        if version is None:
            tenant_work_mark(kind=kind, due_at=next_due_at)
            return
        cursor.execute(_sql(_SETTLE_MOVE), params)


@contextmanager
def tenant_work_settled(*, kind: str, next_due_at: Callable[[], datetime | None]):
    """The block is a task's work, and it settles the current tenant's `kind` mark in the block's own
    transaction: the version is read as the block starts, and the row settled (tenant_work_settle) by
    `next_due_at()`, called when the block ends without an error. Use it inside the block's transaction,
    around the work and before the transaction's marks (tenant_work_marks_batched: the settle's row is locked
    first, and ASSIGNMENT, the kind settled this way, is the first of the kinds in their order).

    Settled in the transaction, what it settles is what it did: a run rolled back leaves the mark for the
    dispatcher. Marks made by other transactions while the block ran still keep the row, as with a settle after
    the commit: they raised the version since it was read (the settle waits for one not committed yet). In a
    pipelined block (core.prepared) the version's read travels with the block's first statements and the
    settle with the COMMIT: no round trip of their own."""
    with prepared_cursor() as cursor:
        cursor.execute(_sql(_VERSION), {"kind": kind, "schema_name": _current_schema_name()})
        yield
        row = cursor.fetchone()
    tenant_work_settle(kind=kind, version=row[0] if row else None, next_due_at=next_due_at())


def tenant_work_clear(*, kind: str) -> None:
    """Removes the current tenant's mark of `kind` whatever its version: the work no longer exists (the
    outbound job stopped). A mark made afterwards stands."""
    with connection.cursor() as cursor:
        cursor.execute(_sql(_CLEAR), {"kind": kind, "schema_name": _current_schema_name()})


def tenant_work_dispatch(*, now: datetime | None = None, limit: int | None = None) -> dict[str, int]:
    """Sends each due kind's task to the tenants whose work is due; returns the tasks sent per kind.

    Runs in the public schema (beat's `tenant-work-dispatch`). Work comes from the two indexes only, so a
    dispatch with nothing due is one indexed query and one Redis script, whatever the number of tenants.
    """
    from sociomile.celery import app

    now = now or timezone.now()
    limit = limit or settings.TENANT_WORK_DISPATCH_BATCH
    lease_until = now + timedelta(seconds=settings.TENANT_WORK_LEASE_SECONDS)
    stale_before = now.timestamp() - settings.CREATIONS_SWEEP_SECONDS
    drains = redis_script_load(_CREATIONS_CLAIM)(keys=[CREATIONS_ACTIVE_KEY], args=[stale_before, now.timestamp(), limit])
    sent: dict[str, int] = {}
    # The claim and the sends in one transaction: if sending fails (the broker away), the leases roll back
    # and the rows are due again at the next dispatch, not one lease later.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_sql(_CLAIM), {"now": now, "limit": limit, "lease_until": lease_until})
            due = [(schema_name, kind, KIND_TASKS[kind]) for schema_name, kind in cursor.fetchall()]
        due += [(name.decode(), "drain", CREATIONS_DRAIN_TASK) for name in drains]
        if not due:
            return sent
        known = set(_existing_schema_names({schema_name for schema_name, _, _ in due}))
        # One producer (one broker connection) for the whole batch. `expires`: a task still queued when the
        # lease runs out is dropped, since the row is then due again and the dispatcher sends a fresh one.
        with app.producer_or_acquire() as producer:
            for schema_name, kind, task_name in due:
                if schema_name not in known:
                    # A drain entry left by a tenant deleted since (rows go with their tenant by cascade).
                    get_redis().zrem(CREATIONS_ACTIVE_KEY, schema_name)
                    continue
                with schema_context(schema_name):
                    app.send_task(task_name, producer=producer, expires=settings.TENANT_WORK_LEASE_SECONDS)
                sent[kind] = sent.get(kind, 0) + 1
    logger.info("tenant work dispatched: %s", ", ".join(f"{kind} {count}" for kind, count in sorted(sent.items())))
    return sent


def _existing_schema_names(names: set[str]) -> list[str]:
    from tenants.models import Tenant

    return list(Tenant.objects.filter(schema_name__in=names).values_list("schema_name", flat=True))
