"""Redis: counters, queued creations, locks, the slot semaphore (core.redis), and Django's cache."""

from sociomile.settings.env import env_str

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:16379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # django-tenants prefixes every key with the current schema: a cache key never crosses tenants.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
    }
}
