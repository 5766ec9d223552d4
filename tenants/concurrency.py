"""Per-tenant concurrency: at most `Tenant.concurrency` of a tenant's tasks run at once, fleet-wide.

This module is the semaphore's API: Redis functions only. The worker side (the gate that asks for a slot
before a task reaches the pool, parks the task otherwise, and releases the slot when it ends) lives in
tenants/worker.py. The cap is a counting semaphore in Redis, one per tenant (docs/architecture.md,
"Per-tenant concurrency and fairness"):

- `sociomile:<schema>:slots`, a sorted set of lease tokens scored by their expiry (Redis server time, so
  machines with skewed clocks agree). A task holds a lease while it runs; a lease whose worker died
  expires after TENANT_SLOT_LEASE_SECONDS and frees its slot.
- `sociomile:<schema>:slots:limit`, the tenant's current limit: a cache of `Tenant.concurrency`, written by
  provisioning and `PUT .../config/concurrency` at once, filled from the database by the worker that finds
  it missing (Redis lost it), and reconciled with the database by every worker's full queue sync.
- `sociomile:_closed-tenants:<schema>`, set while the tenant is being deleted: no new task of it starts.

Acquiring is one Lua script (drop expired leases, compare the count with the limit, add the lease), so
two workers never both take the last slot. The scripts that change state (acquire, limit compare-and-set,
limit fill) run through core.redis's script runner, which never sends a script twice: a retried acquire
would report SATURATED for a lease it had already taken. They live in tenants/scripts/*.lua.
"""

import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from core.redis import get_redis, redis_script_load, tenant_key

ACQUIRED, SATURATED, CLOSED, LIMIT_UNKNOWN = 1, 0, -1, -2

_SCRIPTS = Path(__file__).resolve().parent / "scripts"


def _run_script(name: str, *, keys: list, args: list = ()):
    return redis_script_load(_SCRIPTS / f"{name}.lua")(keys=keys, args=args)


def _slots_key(schema_name: str) -> str:
    return tenant_key(schema_name, "slots")


def _limit_key(schema_name: str) -> str:
    return tenant_key(schema_name, "slots", "limit")


def _closed_key(schema_name: str) -> str:
    # A platform key, not one of the tenant's: it outlives the tenant (tenant_slots_close) while every key
    # under `sociomile:<schema>:` is deleted with it. "_" cannot start a slug, so it names no tenant.
    return f"sociomile:_closed-tenants:{schema_name}"


def _lease_ms() -> int:
    return int(settings.TENANT_SLOT_LEASE_SECONDS * 1000)


def tenant_slot_acquire(*, schema_name: str, token: str, fallback_limit: int | Callable[[], int]) -> int:
    """Takes one of the tenant's slots: ACQUIRED, SATURATED (all taken) or CLOSED (tenant being deleted).

    `fallback_limit` (a number, or a function that reads it from the database) is used only when Redis has
    no limit for the tenant (it lost it): it is written first, and the acquire asked again.
    """
    keys = [_slots_key(schema_name), _limit_key(schema_name), _closed_key(schema_name)]
    outcome = int(_run_script("slot_acquire", keys=keys, args=[token, _lease_ms()]))
    if outcome == LIMIT_UNKNOWN:
        limit = fallback_limit() if callable(fallback_limit) else fallback_limit
        tenant_concurrency_limit_fill(schema_name=schema_name, limit=limit)
        outcome = int(_run_script("slot_acquire", keys=keys, args=[token, _lease_ms()]))
        if outcome == LIMIT_UNKNOWN:  # deleted again in between: count it as saturated, the next try fills it
            outcome = SATURATED
    return outcome


def tenant_slot_release(*, schema_name: str, token: str) -> None:
    get_redis().zrem(_slots_key(schema_name), token)


def tenant_slots_refresh(*, schema_name: str, tokens: list[str]) -> None:
    """Extends the leases of tasks that still run (called by the worker that runs them)."""
    if tokens:
        _run_script("slots_refresh", keys=[_slots_key(schema_name)], args=[_lease_ms(), *tokens])


def tenant_slots_in_use(*, schema_name: str) -> int:
    """How many of the tenant's tasks run right now, across every worker (live leases)."""
    return int(_run_script("slots_in_use", keys=[_slots_key(schema_name)]))


def tenant_slots_in_use_many(*, schema_names: list[str]) -> dict[str, int]:
    counts = redis_script_load(_SCRIPTS / "slots_in_use.lua").many([([_slots_key(name)], []) for name in schema_names])
    return {name: int(count) for name, count in zip(schema_names, counts)}


def tenant_concurrency_limit_set(*, schema_name: str, limit: int) -> None:
    """Publishes the tenant's new limit to every worker: the next task that asks for a slot obeys it."""
    from tenants.queues import tenant_queues_changed

    get_redis().set(_limit_key(schema_name), limit)
    tenant_queues_changed()  # workers drop the limit they remember for the tenant (their fallback)


def tenant_concurrency_limit_fill(*, schema_name: str, limit: int) -> bool:
    """Writes the tenant's limit if Redis has none and the tenant is not being deleted; True if it wrote."""
    return bool(_run_script("limit_fill", keys=[_limit_key(schema_name), _closed_key(schema_name)], args=[limit]))


def tenant_concurrency_limits_reconcile(*, limits: dict[str, int], cached_before: dict[str, bytes | None]) -> None:
    """Writes database limits that differ from Redis, unless Redis changed since `cached_before` was read."""
    for schema_name, limit in limits.items():
        before = cached_before.get(schema_name)
        if before is None or int(before) != limit:
            _run_script("limit_reconcile", keys=[_limit_key(schema_name)], args=[(before or b"").decode(), limit])


def tenant_concurrency_limits_cached(*, schema_names: list[str]) -> dict[str, bytes | None]:
    if not schema_names:
        return {}
    values = get_redis().mget([_limit_key(name) for name in schema_names])
    return dict(zip(schema_names, values))


def tenant_slots_close(*, schema_name: str) -> None:
    """Stops every worker from starting the tenant's tasks (tenant deletion); running ones finish."""
    # Kept for a while after the tenant is gone, so a straggler message (a retry held by a worker) is
    # dropped quietly instead of failing on a missing schema. tenant_slots_open clears it.
    get_redis().set(_closed_key(schema_name), 1, ex=3600)


def tenant_slots_open(*, schema_name: str, limit: int) -> None:
    """A new tenant (or one re-created with a slug just deleted): clears the closed mark, sets the limit."""
    with get_redis().pipeline() as pipe:
        pipe.delete(_closed_key(schema_name), _slots_key(schema_name))
        pipe.set(_limit_key(schema_name), limit)
        pipe.execute()


def tenant_slots_is_closed(*, schema_names: list[str]) -> set[str]:
    if not schema_names:
        return set()
    with get_redis().pipeline(transaction=False) as pipe:
        for name in schema_names:
            pipe.exists(_closed_key(name))
        return {name for name, closed in zip(schema_names, pipe.execute()) if closed}


def tenant_slots_wait_idle(*, schema_name: str, timeout: float) -> bool:
    """Waits until none of the tenant's tasks runs anywhere; False if some still ran after `timeout` s."""
    deadline = time.monotonic() + timeout
    while tenant_slots_in_use(schema_name=schema_name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def tenant_slots_forget(*, schema_name: str) -> None:
    """Removes the tenant's semaphore and limit once the tenant is gone (the closed mark expires alone)."""
    get_redis().delete(_slots_key(schema_name), _limit_key(schema_name))


