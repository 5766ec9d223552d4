from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    """The process-wide Redis client (a connection pool). Keys written through it must be tenant-scoped:
    build them with `tenant_key`."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)


def tenant_key(schema_name: str, *parts: object) -> str:
    """`sociomile:<schema>:<part>:<part>...`: every key that holds tenant data names its tenant."""
    return ":".join(["sociomile", schema_name, *(str(part) for part in parts)])
