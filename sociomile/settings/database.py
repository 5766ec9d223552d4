"""PostgreSQL, one schema per tenant (django-tenants' backend and router)."""

from sociomile.settings.env import database_from_url, env_int, env_str

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", "postgres://sociomile@127.0.0.1:15432/sociomile"))}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A database host that does not answer at all (not "refused": a partition, a failover in progress) would
# otherwise hold a request, /health or a task for the OS's TCP timeout (minutes); fail in seconds instead.
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
# A backend whose client is gone (a worker SIGKILLed, or a task's time limit raised inside a query, after
# which the process drops the connection) otherwise runs its statement to the end, holding its locks, and
# notices only when it sends the result: a drain batch stuck behind a lock kept the next drain waiting behind
# its uncommitted rows for as long. PostgreSQL checks the socket this often while a statement runs (also while
# it waits for a lock) and rolls back. 0 turns it off (PostgreSQL before 14, or a pooler that refuses startup options).
DATABASE_CLIENT_CHECK_MS = env_int("DATABASE_CLIENT_CHECK_MS", 1000)
if DATABASE_CLIENT_CHECK_MS:
    _options = DATABASES["default"]["OPTIONS"]
    _options["options"] = f"{_options.get('options', '')} -c client_connection_check_interval={DATABASE_CLIENT_CHECK_MS}".strip()
# Prepared statements (only core.prepared's: Django's own cursors bind on the client and prepare nothing) keep
# their generic plan from the first run: under PostgreSQL's default (`auto`), the drain's statements stayed on
# custom plans, planned at every run, because a plan for the batch's actual arrays always looked cheaper than
# one for arrays of unknown size. Their generic plans are index lookups by id and (application, number).
_options = DATABASES["default"]["OPTIONS"]
_options["options"] = f"{_options.get('options', '')} -c plan_cache_mode=force_generic_plan".strip()
# How many prepared statements (core.prepared: the drain's and assignment's hot statements, one per schema and
# statement) a connection keeps; the least recently used are deallocated beyond it. ~25 per active tenant.
DATABASE_PREPARED_MAX = env_int("DATABASE_PREPARED_MAX", 1000)
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
