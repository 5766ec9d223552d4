import hashlib
import os
import re
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


@cache
def get_redis() -> redis.Redis:
    """The process-wide Redis client (a connection pool). Keys written through it must be tenant-scoped:
    build them with `tenant_key`.

    It never retries a command, and says so rather than inheriting it: redis-py 8's `Redis(...)` constructor
    retries a command up to 10 times when its connection fails (its `from_url` happens not to), also when the
    command was sent and ran and only its reply was lost, and it cannot tell an idempotent command from one
    that is not. Most of ours are not: INCR/HINCRBY counters, RPUSH, SET NX claims, scripts that allocate or
    take a slot. A lost reply therefore reaches the caller once, as redis.ConnectionError or
    redis.TimeoutError: the API answers 503 with Retry-After (the client decides), a task retries at its own
    level, where each step is idempotent. The price: the first command on a pooled connection that a Redis
    restart broke fails instead of being resent (one 503, then a new connection).
    Scripts go through `redis_script` / `redis_script_load`, never `eval`: core/tests/test_redis.py checks.
    """
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30, retry=_no_retry()
    )


class RedisScript:
    """A Lua script, run with EVALSHA on the calling thread's own connection (see `redis_script`)."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, *, keys: Sequence = (), args: Sequence = ()):
        connection = _thread_connection()
        try:
            connection.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return connection.read_response()
        except NoScriptError:
            # Redis does not know the script (restarted, or SCRIPT FLUSH), so it ran nothing: load it and run once.
            connection.send_command("SCRIPT", "LOAD", self.source)
            connection.read_response()
            connection.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return connection.read_response()

    def many(self, calls: Sequence[tuple[Sequence, Sequence]]) -> list:
        """Runs the script once per `(keys, args)` in `calls`, all sent in one write and read back in order
        (a pipeline on the thread's connection): one round trip for a batch of idempotent reads or writes.
        As for a single call, only a call that Redis answered NOSCRIPT (it ran nothing) is sent again."""
        connection = _thread_connection()
        commands = [("EVALSHA", self.sha, len(keys), *keys, *args) for keys, args in calls]
        connection.send_packed_command(connection.pack_commands(commands))
        replies, missing = [], []
        for index in range(len(commands)):
            try:
                replies.append(connection.read_response())
            except NoScriptError:
                replies.append(None)
                missing.append(index)
        if missing:
            connection.send_command("SCRIPT", "LOAD", self.source)
            connection.read_response()
            connection.send_packed_command(connection.pack_commands([commands[index] for index in missing]))
            for index in missing:
                replies[index] = connection.read_response()
        return replies


_scripts: dict[str, RedisScript] = {}
_threads = threading.local()


def redis_script(source: str) -> RedisScript:
    """The Lua script `source`, called as `script(keys=[...], args=[...])` with EVALSHA.

    A call runs on a connection of the calling thread's own, outside the client's pool: on the message-create
    path the pool's checkout (a lock, a readiness poll, its bookkeeping) and the client's command layers cost
    as much CPU as the rest of the Redis call (bench/README.md, "Figures behind the code"). Our scripts allocate numbers and queue or trim records, so none may
    run twice: a script is sent once and never again once sent, whatever retries a client is configured with.
    A lost reply reaches the caller as redis.ConnectionError or redis.TimeoutError (the API answers 503; a task
    retries at its own level, where each step is idempotent) and drops the connection; the next call opens a
    new one. Only NOSCRIPT, which means nothing ran, makes it load the script and send it again."""
    script = _scripts.get(source)
    if script is None:
        script = _scripts[source] = RedisScript(source)
    return script


_SCRIPT_FILES: dict[str, RedisScript] = {}
_SCRIPTS = Path(__file__).resolve().parent / "scripts"
# `--! include <name>` on a line of its own is replaced by core/scripts/lib/<name>.lua: Lua in Redis has no
# modules, and a snippet several scripts need (the server's clock in ms) is then written once.
_INCLUDE = re.compile(r"^--! include ([a-z_]+)$", re.MULTILINE)


def redis_script_source(path: str | Path) -> str:
    """The text of the Lua file `path` as Redis runs it: its `--! include <name>` lines replaced by the
    snippets of core/scripts/lib/."""
    return _INCLUDE.sub(lambda match: (_SCRIPTS / "lib" / f"{match[1]}.lua").read_text().rstrip("\n"), Path(path).read_text())


def redis_script_load(path: str | Path) -> RedisScript:
    """The Lua script in the file `path` (kept beside its app: `<app>/scripts/<name>.lua`), run through
    `redis_script`: the one way a script is called, never retried once sent. Read once per process."""
    script = _SCRIPT_FILES.get(str(path))
    if script is None:
        script = _SCRIPT_FILES[str(path)] = redis_script(redis_script_source(path))
    return script


def _thread_connection() -> redis.Connection:
    """This thread's connection, made with the settings of the process's client (a forked child, or a new
    client after `get_redis.cache_clear()`, makes a new one)."""
    pool = get_redis().connection_pool
    connection = getattr(_threads, "connection", None)
    if connection is None or _threads.owner != (os.getpid(), pool):
        connection = pool.connection_class(**pool.connection_kwargs)
        _threads.connection, _threads.owner = connection, (os.getpid(), pool)
    return connection


def window_count(key: str, *, window_seconds: int) -> tuple[int, int]:
    """Counts one event in the fixed window kept at `key` (tenant-scoped: build it with `tenant_key`); returns
    the count so far in the window and the seconds until it ends. The window starts with its first event and
    the count lives in Redis, so it holds across processes. One script: the count and its expiry are set
    together, so a key never outlives its window."""
    count, seconds_left = redis_script_load(_SCRIPTS / "window_count.lua")(keys=[key], args=[window_seconds])
    return int(count), max(int(seconds_left), 1)


def window_uncount(key: str) -> None:
    """Takes back one event counted by `window_count`, if its window is still open (never a key with no expiry)."""
    redis_script_load(_SCRIPTS / "window_uncount.lua")(keys=[key])


def redis_delete_if_equal(key: str, value: str) -> bool:
    """Deletes `key` only if it still holds `value` (a lock token, a claim this caller wrote), never a value
    another process wrote since; True if it deleted. The one compare-and-delete every app uses."""
    return bool(redis_script_load(_SCRIPTS / "delete_if_equal.lua")(keys=[key], args=[value]))


def tenant_key(schema_name: str, *parts: object) -> str:
    """`sociomile:<schema>:<part>:<part>...`: every key that holds tenant data names its tenant."""
    return ":".join(["sociomile", schema_name, *(str(part) for part in parts)])


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def tenant_keys_delete(schema_name: str) -> int:
    """Deletes every key of the tenant (a deleted tenant leaves nothing behind in Redis); returns how many.

    That is everything built with `tenant_key` (`sociomile:<schema>:*`) and Django cache entries made in
    the tenant's schema (django-tenants prefixes them `<schema>:<KEY_PREFIX>:`). SCAN, not KEYS: a large
    Redis is not blocked while the keys are found.
    """
    client = get_redis()
    key_prefix = settings.CACHES.get("default", {}).get("KEY_PREFIX", "")
    patterns = [f"sociomile:{_glob_escape(schema_name)}:*", f"{_glob_escape(schema_name)}:{_glob_escape(key_prefix)}:*"]
    deleted = 0
    for pattern in patterns:
        batch = []
        for key in client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
    return deleted
