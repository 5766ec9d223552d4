"""Queued creations: numbers allocated in Redis at request time, rows persisted in batches by a task.

A create request runs one Lua script that atomically increments the application's (or chat's) counter
and appends the creation, number included, to the tenant's pending list. So a number is never handed
out without its creation being queued, and a chat's creation is always queued before any message of
that chat can be. A `creations_persist_task` on the tenant's queue drains the list in FIFO batches,
one transaction per batch (conversations.services.creations_persist).

Keys, all under the tenant's schema name (core.redis.tenant_key):
- `app:<id>:chats`                 last chat number allocated in the application
- `app:<id>:chat:<n>:messages`     last message number allocated in chat n
- `creations`                      the pending list (JSON records)
- `creations:scheduled`            set while a drain task is queued and has not started yet
- `creations:lock`                 held by the one drain running for the tenant (a lease)
- `creations:dead`                 creations PostgreSQL refused, with the error (never dropped silently)

If Redis loses a counter, the next allocation re-seeds it from the largest number in PostgreSQL
(`SET NX`, so concurrent re-seeders agree); that is exact when no creation was in flight.
"""

import json
import uuid
from collections.abc import Callable

from django.db import connection

from core.redis import get_redis, tenant_key

NEEDS_SEED = -1
NOT_FOUND = 0

# Returns the new chat number, or -1 when the counter is missing (re-seed, then call again).
_CHAT_ALLOCATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local number = redis.call('INCR', KEYS[1])
local record = cjson.decode(ARGV[1])
record['number'] = number
redis.call('RPUSH', KEYS[2], cjson.encode(record))
-- a new chat's message counter starts at 0, so its first message needs no database read
redis.call('SET', ARGV[2] .. number .. ARGV[3], 0, 'NX')
local scheduled = redis.call('SET', KEYS[3], 1, 'NX', 'EX', tonumber(ARGV[4]))
return {number, scheduled and 1 or 0}
"""

# Returns the new message number; 0 when the chat number was never allocated; -1 to re-seed.
_MESSAGE_ALLOCATE = """
local chats = redis.call('GET', KEYS[1])
if not chats then return -1 end
if tonumber(ARGV[2]) > tonumber(chats) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local number = redis.call('INCR', KEYS[2])
local record = cjson.decode(ARGV[1])
record['number'] = number
redis.call('RPUSH', KEYS[3], cjson.encode(record))
local scheduled = redis.call('SET', KEYS[4], 1, 'NX', 'EX', tonumber(ARGV[3]))
return {number, scheduled and 1 or 0}
"""

_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A drain that has not started within this many seconds is assumed lost; the next creation schedules another.
SCHEDULED_TTL_SECONDS = 30
LOCK_LEASE_SECONDS = 60


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


def _run(script: str, keys: list[str], args: list, seed: Callable[[], None]):
    redis = get_redis()
    result = redis.eval(script, len(keys), *keys, *args)
    if result == NEEDS_SEED:
        seed()
        result = redis.eval(script, len(keys), *keys, *args)
    return result


def chat_number_allocate(*, application_id: int, record: dict, seed_from: Callable[[], int]) -> tuple[int, bool]:
    """Allocates the next chat number and queues `record` with it. Returns (number, drain_needed)."""
    counter = chats_counter_key(application_id)

    def seed():
        get_redis().set(counter, seed_from(), nx=True)

    prefix = _key("app", application_id, "chat", "")
    number, scheduled = _run(
        _CHAT_ALLOCATE,
        [counter, pending_key(), scheduled_key()],
        [json.dumps(record), prefix, ":messages", SCHEDULED_TTL_SECONDS],
        seed,
    )
    return number, bool(scheduled)


def message_number_allocate(
    *, application_id: int, chat_number: int, record: dict, seed_chats_from: Callable[[], int], seed_messages_from: Callable[[], int]
) -> tuple[int, bool] | None:
    """Allocates the next message number in a chat and queues `record`; None if the chat was never allocated."""
    chats = chats_counter_key(application_id)
    messages = messages_counter_key(application_id, chat_number)

    def seed():
        redis = get_redis()
        redis.set(chats, seed_chats_from(), nx=True)
        redis.set(messages, seed_messages_from(), nx=True)

    result = _run(
        _MESSAGE_ALLOCATE,
        [chats, messages, pending_key(), scheduled_key()],
        [json.dumps(record), chat_number, SCHEDULED_TTL_SECONDS],
        seed,
    )
    if result == NOT_FOUND:
        return None
    number, scheduled = result
    return number, bool(scheduled)


def pending_peek(limit: int) -> list[dict]:
    return [json.loads(raw) for raw in get_redis().lrange(pending_key(), 0, limit - 1)]


def pending_remove(count: int) -> None:
    """Drops the first `count` records, once they are committed (only the lock holder calls this)."""
    get_redis().ltrim(pending_key(), count, -1)


def pending_count() -> int:
    return get_redis().llen(pending_key())


def dead_push(*, record: dict, error: str) -> None:
    """Parks a creation PostgreSQL refused, with the error, for an operator to look at (`creations:dead`)."""
    get_redis().rpush(_key("creations", "dead"), json.dumps({"record": record, "error": error}))


def scheduled_clear() -> None:
    get_redis().delete(scheduled_key())


def lock_acquire() -> str | None:
    token = uuid.uuid4().hex
    return token if get_redis().set(lock_key(), token, nx=True, ex=LOCK_LEASE_SECONDS) else None


def lock_release(token: str) -> None:
    get_redis().eval(_LOCK_RELEASE, 1, lock_key(), token)
