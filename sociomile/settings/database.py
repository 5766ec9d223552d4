"""PostgreSQL, one schema per tenant (django-tenants' backend and router)."""

from sociomile.settings.env import database_from_url, env_int, env_str

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", "postgres://sociomile@127.0.0.1:15432/sociomile"))}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A database host that does not answer at all (not "refused": a partition, a failover in progress) would
# otherwise hold a request, /health or a task for the OS's TCP timeout (minutes); fail in seconds instead.
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
