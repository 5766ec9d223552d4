"""Queued creations: numbers allocated in Redis at request time, rows persisted in batches by a task.

A "creation" is a write waiting for persistence: a chat or a message the API has accepted (202, with its
number) whose row is not in PostgreSQL yet. It is a JSON record in the tenant's pending list in Redis until
the drain (`creations_persist_task` -> conversations.services.creations_persist) inserts it; "the creations"
of a tenant are that list. Where a message is persisted: here it is queued, the drain writes its row.

A create request runs one Lua script that atomically increments the application's (or chat's) counter
and appends the creation, number included, to the tenant's pending list. So a number is never handed
out without its creation being queued, and a chat's creation is always queued before any message of
that chat can be. A `creations_persist_task` on the tenant's queue drains the list in FIFO batches,
one transaction per batch (conversations.services.creations_persist).

Keys, all under the tenant's schema name (core.redis.tenant_key):
- `app:<id>:chats`                 last chat number allocated in the application
- `app:<id>:chat:<n>:messages`     last message number allocated in chat n
- `creations`                      the pending list (JSON records)
- `creations:scheduled`            set while a drain task is queued or running: a request that finds it set
                                   sends no task. The running drain keeps it set (renewed with its lease)
                                   and deletes it only in the same step as it finds the list empty
- `creations:lock`                 held by the one drain running for the tenant (a lease renewed each batch)
- `creations:dead`                 creations PostgreSQL refused, with the error (never dropped silently)

and one platform key: `sociomile:_active-tenants:creations` (tenants.work), the tenants with queued
creations, scored by when they were added or a drain last made progress; the dispatcher sends a drain to
those whose score is older than CREATIONS_SWEEP_SECONDS.

If Redis loses a counter, the next allocation re-seeds it from the largest number in PostgreSQL
(`SET NX`, so concurrent re-seeders agree); that is exact when no creation was in flight.
"""

import json
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

from core.redis import get_redis, redis_delete_if_equal, redis_script_load, tenant_key
from tenants.work import CREATIONS_ACTIVE_KEY

NEEDS_SEED = -1
NOT_FOUND = 0
CLAIM_LOST = -2


class DeliveryClaimLost(Exception):
    """The inbound delivery's idempotency claim expired and was taken over; nothing was queued."""

# The scripts: conversations/scripts/*.lua (what each takes and returns is written at its top).
_SCRIPTS = Path(__file__).resolve().parent / "scripts"
_CHAT_ALLOCATE = _SCRIPTS / "chat_allocate.lua"
_MESSAGE_ALLOCATE = _SCRIPTS / "message_allocate.lua"
_DRAIN_LEASE = _SCRIPTS / "drain_lease.lua"
_FINISH_IF_EMPTY = _SCRIPTS / "finish_if_empty.lua"

# A drain that has not started within this many seconds is assumed lost; the next creation schedules another.
SCHEDULED_TTL_SECONDS = 30


def _key(*parts: object) -> str:
    return tenant_key(connection.schema_name, *parts)


def chats_counter_key(application_id: int) -> str:
    return _key("app", application_id, "chats")


def messages_counter_key(application_id: int, chat_number: int) -> str:
    return _key("app", application_id, "chat", chat_number, "messages")


def pending_key() -> str:
    return _key("creations")


def scheduled_key() -> str:
    return _key("creations", "scheduled")


def lock_key() -> str:
    return _key("creations", "lock")


def dead_key() -> str:
    return _key("creations", "dead")


def _run(script: Path, keys: list[str], args: list, seed: Callable[[], None]):
    allocate = redis_script_load(script)
    result = allocate(keys=keys, args=args)
    if result == NEEDS_SEED:
        seed()
        result = allocate(keys=keys, args=args)
    return result


def chat_number_allocate(*, application_id: int, record: dict, seed_from: Callable[[], int]) -> tuple[int, bool]:
    """Allocates the next chat number and queues `record` with it. Returns (number, drain_needed)."""
    number, drain_needed, _created = _chat_allocate(application_id=application_id, record=record, seed_from=seed_from)
    return number, drain_needed


def chat_number_allocate_unless_open(
    *, application_id: int, record: dict, seed_from: Callable[[], int], open_chat_key: str, open_chat_ttl: int
) -> tuple[int, bool, bool]:
    """The number held in `open_chat_key` if any (nothing allocated), else a new chat's number, queued with
    `record` and stored in `open_chat_key`, atomically. Returns (number, drain_needed, created)."""
    return _chat_allocate(
        application_id=application_id, record=record, seed_from=seed_from, extra_keys=[open_chat_key], extra_args=[open_chat_ttl]
    )


def _chat_allocate(
    *, application_id: int, record: dict, seed_from: Callable[[], int], extra_keys: list = (), extra_args: list = ()
) -> tuple[int, bool, bool]:
    counter = chats_counter_key(application_id)

    def seed():
        get_redis().set(counter, seed_from(), nx=True)

    prefix = _key("app", application_id, "chat", "")
    number, scheduled, created = _run(
        _CHAT_ALLOCATE,
        [counter, pending_key(), scheduled_key(), CREATIONS_ACTIVE_KEY, *extra_keys],
        [json.dumps(record), prefix, ":messages", SCHEDULED_TTL_SECONDS, connection.schema_name, *extra_args],
        seed,
    )
    return number, bool(scheduled), bool(created)


def message_number_allocate(
    *,
    application_id: int,
    chat_number: int,
    record: dict,
    seed_chats_from: Callable[[], int],
    seed_messages_from: Callable[[], int],
    delivery: tuple[str, str, int] | None = None,
) -> tuple[int, bool] | None:
    """Allocates the next message number in a chat and queues `record`; None if the chat was never allocated.

    `delivery` is an inbound delivery's (idempotency key, claim, answer TTL): the answer replaces the claim
    in the same atomic step, or DeliveryClaimLost is raised and nothing is queued.
    """
    if chat_number < 1:
        # Chats are numbered from 1. The script's check (no more than the chats allocated) would let 0 through:
        # its message would be queued, then refused by the drain, which finds no such chat.
        return None
    chats = chats_counter_key(application_id)
    messages = messages_counter_key(application_id, chat_number)

    def seed():
        redis = get_redis()
        redis.set(chats, seed_chats_from(), nx=True)
        redis.set(messages, seed_messages_from(), nx=True)

    keys = [chats, messages, pending_key(), scheduled_key(), CREATIONS_ACTIVE_KEY]
    args = [json.dumps(record), chat_number, SCHEDULED_TTL_SECONDS, connection.schema_name]
    if delivery is not None:
        key, claim, answer_ttl = delivery
        keys.append(key)
        args.extend([claim, answer_ttl])
    result = _run(_MESSAGE_ALLOCATE, keys, args, seed)
    if result == NOT_FOUND:
        return None
    if result == CLAIM_LOST:
        raise DeliveryClaimLost()
    number, scheduled = result
    return number, bool(scheduled)


def pending_peek(limit: int) -> list[dict]:
    return [json.loads(raw) for raw in get_redis().lrange(pending_key(), 0, limit - 1)]


def pending_remove(*, count: int, token: str) -> int | None:
    """Drops the first `count` records once they are committed and renews the lease for the next batch, if the
    drain still holds the lock (`token`); returns how many records wait. None: the lease ran out and another
    drain owns the list now; stop draining."""
    return _drain_lease(token=token, trim=count)


def pending_count() -> int:
    return get_redis().llen(pending_key())


def dead_push(*, record: dict, error: str) -> None:
    """Parks a creation PostgreSQL refused, with the error, for an operator to look at (`creations:dead`)."""
    get_redis().rpush(dead_key(), json.dumps({"record": record, "error": error}))


FINISHED, RECORDS_WAITING, LEASE_LOST = 1, 0, -1


def finish_if_empty(token: str) -> int:
    """Unsets `scheduled` and releases the lock if the list is empty, atomically: FINISHED (the lock is
    released), RECORDS_WAITING or LEASE_LOST."""
    keys = [lock_key(), pending_key(), scheduled_key(), CREATIONS_ACTIVE_KEY]
    return int(redis_script_load(_FINISH_IF_EMPTY)(keys=keys, args=[token, connection.schema_name]))


def lock_acquire() -> str | None:
    token = uuid.uuid4().hex
    return token if get_redis().set(lock_key(), token, nx=True, ex=settings.CREATIONS_LOCK_LEASE_SECONDS) else None


def drain_lock_acquire() -> tuple[str, int] | None:
    """The drain's start: takes the lock (with `scheduled` and the heartbeat, as a renewal would) and counts the
    waiting records, in one round trip. (token, records waiting), or None if another drain holds the lock."""
    token = uuid.uuid4().hex
    waiting = _drain_lease(token=token, take=True)
    return None if waiting is None else (token, waiting)


def lock_renew(token: str) -> bool:
    """Extends the drain's lease for one more batch, and `scheduled` with it (requests need not send another
    drain); False if the lease ran out and another drain took the lock."""
    return _drain_lease(token=token) is not None


def _drain_lease(*, token: str, trim: int = 0, take: bool = False) -> int | None:
    # conversations/scripts/drain_lease.lua: records waiting, or None when the lock is not ours.
    keys = [lock_key(), pending_key(), scheduled_key(), CREATIONS_ACTIVE_KEY]
    args = [token, settings.CREATIONS_LOCK_LEASE_SECONDS, connection.schema_name, trim, "1" if take else "0"]
    waiting = int(redis_script_load(_DRAIN_LEASE)(keys=keys, args=args))
    return None if waiting < 0 else waiting


def lock_release(token: str) -> None:
    redis_delete_if_equal(lock_key(), token)


def lock_hand_back(token: str) -> bool:
    """The way out for a holder of the drain lock that is not a drain (the recount, an erasure): releases the
    lock and says whether a drain must be sent now. A drain that found the lock held returned with `scheduled`
    still set, trusting the holder to look again; so when the list is empty `scheduled` is unset in the same
    step, as a drain's own way out does (the next record's request then sends a drain), and when records wait
    the holder sends one. Releasing alone, with the list empty, left `scheduled` set and nobody draining: the
    records queued next sent no task and waited for the sweep."""
    if finish_if_empty(token) != RECORDS_WAITING:
        return False
    lock_release(token)
    return True
