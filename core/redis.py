from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    """The process-wide Redis client (a connection pool). Keys written through it must be tenant-scoped:
    build them with `tenant_key`."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)


_scripts: dict = {}


def redis_script(source: str):
    """The Lua script `source` on the process's client, called with EVALSHA (redis-py loads it again if Redis
    forgot it): a call sends the digest, not the script, and Redis does not hash the text on every call.
    Made once per process and client (a forked worker gets its own client and registers again)."""
    client = get_redis()
    script = _scripts.get(source)
    if script is None or script.registered_client is not client:
        script = _scripts[source] = client.register_script(source)
    return script


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
