"""Settings shared by every environment. Everything deployment-specific comes from the environment."""

from pathlib import Path

from sociomile.settings.env import database_from_url, env_bool, env_header_value, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Refused by settings.production; fine for a laptop and the tests.
INSECURE_DEFAULT_SECRET_KEY = "django-insecure-sociomile-local-development-key"
SECRET_KEY = env_str("SECRET_KEY", INSECURE_DEFAULT_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)

# A tenant with slug `acme` is served on `acme.<BASE_DOMAIN>`; the platform on BASE_DOMAIN itself.
BASE_DOMAIN = env_str("BASE_DOMAIN", "localhost")
# Unknown hosts are answered 404 by core.middleware.TenantHostMiddleware, which only lets through
# BASE_DOMAIN and the domains in the tenants_domain table; narrow this further in production if you like.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"])

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", "postgres://sociomile@127.0.0.1:55432/sociomile"))}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A database host that does not answer at all (not "refused": a partition, a failover in progress) would
# otherwise hold a request, /health or a task for the OS's TCP timeout (minutes); fail in seconds instead.
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:56379/0")

# --- Tenancy -------------------------------------------------------------------------------------------
# Public schema: tenants, domains, platform users, celery-beat. Each tenant schema: its own users, tokens,
# admin log and the product's data. Apps in both lists get their tables in every schema, and a tenant's
# search_path ("<tenant>, public") finds the tenant's own table first: tokens and users never cross.
SHARED_APPS = [
    # Before django_tenants: its `migrate` / `migrate_schemas` commands are overridden by ours.
    "tenants",
    "django_tenants",
    "core",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.admin",
    "rest_framework.authtoken",
    "core",
    "conversations",
    "agents",
    "scheduler",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

# SET search_path only when the schema changes, instead of before every query (half of all round trips).
# Safe: django-tenants forgets the path on close, rollback and savepoint rollback, which undo a SET
# (core/tests/test_db.py).
TENANT_LIMIT_SET_CALLS = True
TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_URLCONF = "sociomile.urls_public"
ROOT_URLCONF = "sociomile.urls_tenants"
# New tenant schemas are cloned from this one, kept migrated by `migrate_schemas` (tenants.services).
# Not a valid slug (underscore), so no tenant can ever be called this.
TENANT_TEMPLATE_SCHEMA = "tenant_template"
# `migrate_schemas --executor=multiprocessing` migrates this many tenant schemas at once (each in a process
# with its own connection); only schemas that lack a migration are migrated at all (tenants.schema_migrations).
TENANT_MULTIPROCESSING_MAX_PROCESSES = env_int("MIGRATE_PROCESSES", 2)
# Slugs that would shadow the platform host's own names or PostgreSQL's schemas.
TENANT_RESERVED_SLUGS = {"public", "www", "api", "admin", "docs", "static", "health", "metrics", "template"}

AUTH_USER_MODEL = "core.User"

MIDDLEWARE = [
    # Outermost: after a response given without reading a large body (a 413, a 401...), reads and discards
    # it, so the client's keep-alive connection stays usable (core/middleware.py).
    "core.middleware.UnreadBodyDrainMiddleware",
    # Before anything queries: a NUL in the path or query string is a 400 (core/middleware.py).
    "core.middleware.UnstorableInputMiddleware",
    # Then: picks the schema and URL conf from the Host header, 404s unknown hosts.
    "core.middleware.TenantHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as it answers from process_view: a method an API view does not declare is a 405 before its
    # authentication (core/middleware.py).
    "core.middleware.MethodNotAllowedFirstMiddleware",
]
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "sociomile.wsgi.application"

# Argon2 first (Django's recommendation): ~0.2 s a hash here, where PBKDF2 at Django 6's iteration count
# takes ~1.8 s and made every sign-in and tenant creation that slow. PBKDF2 stays to verify older hashes.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Lets runserver and the tests serve static files without collectstatic.
WHITENOISE_USE_FINDERS = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Request size limit: the API takes small JSON bodies. Every JSON body (core.parsers.JSONParser) and the
# channel webhook's raw body are refused past this with a 413 JSON error before anything is parsed; 1 MiB
# holds the longest message (MESSAGE_MAX_LENGTH characters, even \u-escaped) many times over.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)

# --- Product limits -------------------------------------------------------------------------------------
MESSAGE_MAX_LENGTH = env_int("MESSAGE_MAX_LENGTH", 10_000)
# Queued chat and message creations persisted per transaction by one drain (conversations.services).
CREATIONS_BATCH_SIZE = env_int("CREATIONS_BATCH_SIZE", 1000)
# The one drain of a tenant holds a lease, renewed before each batch; a drain whose worker was killed blocks
# the tenant's drains for at most this long. It only has to outlast one batch (one transaction).
CREATIONS_LOCK_LEASE_SECONDS = env_int("CREATIONS_LOCK_LEASE_SECONDS", 30)
# A drain whose batch is not full waits this long once for more records: under steady load, fewer and bigger
# batches (less worker CPU per message), at the cost of rows appearing up to this much later.
CREATIONS_DRAIN_LINGER_MS = env_int("CREATIONS_DRAIN_LINGER_MS", 20)
# Under steady load one drain task keeps draining; after this long it hands over to a new task, so a task
# never runs for ever (worker shutdown waits for it) and the tenant's other tasks get its slot in between.
# It is also the time slice of a pool process: with more tenants draining than processes, a tenant's
# records wait about (draining tenants / processes) x this for their drain's next turn (issue 18: 5 s made
# create -> readable p99 several seconds at 20 busy tenants on 4 processes).
CREATIONS_DRAIN_MAX_SECONDS = float(env_str("CREATIONS_DRAIN_MAX_SECONDS", "0.5"))

# --- Scale (issue 18): the drain serves its chats' assignment itself ---------------------------------------
# A drain runs the assignment for the chats it persisted in its own process (no task per batch): after its
# first batch, then at most this often while batches keep coming, and once when it ends.
CREATIONS_DRAIN_ASSIGN_EVERY_MS = env_int("CREATIONS_DRAIN_ASSIGN_EVERY_MS", 100)

# --- Inbound channel webhook (conversations.inbound) -----------------------------------------------------
# Deliveries accepted per application per window (a fixed window counted in Redis, across web processes);
# the one over the limit is answered 429 with Retry-After.
WEBHOOK_RATE_LIMIT = env_int("WEBHOOK_RATE_LIMIT", 600)
WEBHOOK_RATE_WINDOW_SECONDS = env_int("WEBHOOK_RATE_WINDOW_SECONDS", 60)
# Sign-in (POST /api/auth/token and the admin's login form), per host: attempts counted in a fixed window per
# email and per client address; past either limit, 429 with Retry-After, and the password is not checked.
# A success clears the email's count and takes its attempt back from the address's: the limits count failures.
SIGN_IN_ATTEMPTS_PER_EMAIL = env_int("SIGN_IN_ATTEMPTS_PER_EMAIL", 10)
SIGN_IN_ATTEMPTS_PER_ADDRESS = env_int("SIGN_IN_ATTEMPTS_PER_ADDRESS", 100)
SIGN_IN_WINDOW_SECONDS = env_int("SIGN_IN_WINDOW_SECONDS", 15 * 60)
# How long the answer to a delivery with an external_id is kept: a repeat within it gets the same answer.
WEBHOOK_IDEMPOTENCY_TTL_SECONDS = env_int("WEBHOOK_IDEMPOTENCY_TTL_SECONDS", 24 * 3600)

# --- Cache (Redis) -------------------------------------------------------------------------------------
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # django-tenants prefixes every key with the current schema: a cache key never crosses tenants.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
    }
}

# --- REST framework and OpenAPI ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "core.negotiation.ContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Reverse proxies of ours in front of the web server, each appending the address it saw to
    # X-Forwarded-For: the client's address is that many entries from the header's end. 0: REMOTE_ADDR, and
    # the header (which a client may write itself) is ignored. Used by the sign-in limit.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sociomile API",
    "DESCRIPTION": "Multi-tenant omnichannel customer-service messaging backend.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `status` (or `role`) with choices of their own: name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "ChatStatusEnum": "conversations.models.Chat.Status",
        "MessageSenderEnum": "conversations.models.Message.Sender",
        "UserRoleEnum": "core.models.User.Role",
        "OutboundMessageStatusEnum": "scheduler.models.OutboundMessage.Status",
        "TicketStatusEnum": "conversations.models.Ticket.Status",
    },
}

# --- Celery --------------------------------------------------------------------------------------------
# RabbitMQ: its consumers are pushed messages, so a worker consuming thousands of idle tenant queues costs
# nothing while they are idle (kombu's Redis transport polls one list per queue: docs/architecture.md,
# "Background work", has the measurement). Redis stays for counters, cache, locks and the slot semaphore.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:55672//")
CELERY_TIMEZONE = TIME_ZONE
# Tasks with no tenant (fan-outs, platform work) go here; each tenant's tasks go to its own queue
# (tenants.queues.route_task), which every worker consumes (tenants.worker).
CELERY_TASK_DEFAULT_QUEUE = "platform"
CELERY_TASK_ROUTES = ("tenants.queues.route_task",)
# No result backend: callers never wait on a task; outcomes live in the rows tasks write.
CELERY_TASK_IGNORE_RESULT = True
# Every task is idempotent (it reloads its rows and returns early when its work is done), so we ack after
# the task ran: a worker killed mid-task gets its message redelivered instead of losing it.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message per process at a time: a long task never sits on messages another process could run, and a
# tenant's backlog is not hoarded by one process (fairness across tenant queues). Celery asks RabbitMQ for
# a *global* (per-channel) prefetch (tasks.py `qos_global`: RabbitMQ >= 3.3), so a worker holds at most its
# concurrency in unacknowledged messages across all its tenant queues, not that many per queue.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Tenant queues are classic durable queues (kombu's default; messages are published persistent): Celery
# must not go looking for quorum queues, which would turn the global prefetch off.
CELERY_WORKER_DETECT_QUORUM_QUEUES = False
# Publisher confirms: a publish returns once RabbitMQ has the message, so an accepted request (202) never
# stands for a message still in a socket buffer when the connection broke.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# RabbitMQ closes a channel holding a delivery unacknowledged longer than its consumer_timeout (bin/lib.sh
# sets 15 min in the node's rabbitmq.conf) and redelivers everything the channel held. So every way a
# worker holds a message stays below it: a task's hard time limit, and a task parked for its tenant's slot
# (TENANT_PARK_MAX_SECONDS below), which is put back at the end of its queue after that long.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_SEND_TASK_EVENTS = False
# Workers log through LOGGING below, so their lines carry the tenant's schema too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Periodic work is driven by the tenants that have work (tenants.work): beat has ONE entry, whatever the
# number of tenants. No entry per tenant and no entry that visits every tenant: an idle tenant costs nothing.
# The DatabaseScheduler copies this into its table at start (editable in the platform admin).
TENANT_WORK_DISPATCH_SECONDS = float(env_str("TENANT_WORK_DISPATCH_SECONDS", "1"))
CELERY_BEAT_SCHEDULE = {
    # Every second: sends the due kinds of work (assignment, outbound runs, counts reconcile, drains whose
    # task died) to just the tenants that have them. Its period is the outbound interval's precision; with
    # nothing due it costs one indexed query and one Redis script. Expires after one period: a dispatch
    # that waited longer is replaced by the next one rather than run late.
    "tenant-work-dispatch": {
        "task": "tenants.tasks.tenant_work_dispatch_task",
        "schedule": TENANT_WORK_DISPATCH_SECONDS,
        "options": {"expires": max(TENANT_WORK_DISPATCH_SECONDS, 1.0)},
    },
}
# A claimed row is pushed this far ahead when its task is sent (the task is dropped if still queued then):
# a task that is lost, or whose worker died, comes due again after this long.
TENANT_WORK_LEASE_SECONDS = env_int("TENANT_WORK_LEASE_SECONDS", 60)
# Work also sent a task at once (an assignment after a new waiting chat) is marked due this much later: the
# task normally settles it first; the dispatcher acts only when that task was lost.
TENANT_WORK_GRACE_SECONDS = env_int("TENANT_WORK_GRACE_SECONDS", 10)
# Tenants' work sent per dispatch at most (of each index); more waits for the next dispatch.
TENANT_WORK_DISPATCH_BATCH = env_int("TENANT_WORK_DISPATCH_BATCH", 500)
# Safety net of queued creations: a tenant whose creations have been queued this long without a drain
# emptying its list gets a drain (the one its requests sent died holding its lease).
CREATIONS_SWEEP_SECONDS = env_int("CREATIONS_SWEEP_SECONDS", 30)
# A tenant that had creations gets its chats_count / messages_count recounted within this long.
COUNTS_RECONCILE_SECONDS = env_int("COUNTS_RECONCILE_SECONDS", 3600)
# --- Agent allocation (agents app) -----------------------------------------------------------------------
# What a new agent's max_customers is unless its creator says otherwise (each tenant can change its own
# default in its admin: agents.AllocationSettings).
AGENT_DEFAULT_MAX_CUSTOMERS = env_int("AGENT_DEFAULT_MAX_CUSTOMERS", 2)
# Chats assigned per round of the engine's loop (one transaction holds all rounds of a run).
ASSIGNMENT_BATCH_SIZE = env_int("ASSIGNMENT_BATCH_SIZE", 500)
# An assigned chat whose agent has not replied within this many seconds goes back to the head of the
# queue for another agent; 0 turns it off. Checked by every run and by the sweep below.
ASSIGNMENT_REPLY_TIMEOUT_SECONDS = env_int("ASSIGNMENT_REPLY_TIMEOUT_SECONDS", 0)
# Assignment runs on every event that can change it (agents.services). A tenant left with waiting chats and
# no free agent is looked at again this often (the safety net: agents.services.assignment_next_due_at).
ASSIGNMENT_SWEEP_SECONDS = env_int("ASSIGNMENT_SWEEP_SECONDS", 30)
# Qiscus Omnichannel: when all three are set, each assignment of a Qiscus room is also made in Qiscus.
QISCUS_BASE_URL = env_str("QISCUS_BASE_URL", "")
QISCUS_APP_ID = env_str("QISCUS_APP_ID", "")
QISCUS_SECRET_KEY = env_str("QISCUS_SECRET_KEY", "")
QISCUS_TIMEOUT_SECONDS = env_int("QISCUS_TIMEOUT_SECONDS", 10)
QISCUS_MAX_RETRIES = env_int("QISCUS_MAX_RETRIES", 5)
# The agents API's `role` (admin | agent) next to the user's (which also has platform_admin), named apart.
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})["StaffRoleEnum"] = ["admin", "agent"]
# tenant-schemas-celery: keep the Tenant row a worker loads for a schema for a minute.
CELERY_TASK_TENANT_CACHE_SECONDS = 60
# How often each worker checks whether the tenants changed (one Redis read of the tenants generation) and,
# when they did, reconciles the tenant queues it consumes with the tenants table; a tenant created or
# deleted is also announced at once by broadcast (tenants.queues, tenants.worker).
TENANT_QUEUE_SYNC_SECONDS = env_int("TENANT_QUEUE_SYNC_SECONDS", 2)
# The safety net: a full reconcile (queues and the limits cached in Redis) this often even if nothing
# announced a change (a generation bump lost while Redis was away).
TENANT_QUEUE_FULL_SYNC_SECONDS = env_int("TENANT_QUEUE_FULL_SYNC_SECONDS", 300)
# Per-tenant concurrency (tenants.concurrency): a running task holds a lease on one of its tenant's slots;
# the lease is refreshed while the task runs and expires this long after its worker died.
TENANT_SLOT_LEASE_SECONDS = env_int("TENANT_SLOT_LEASE_SECONDS", 30)
# How often a worker retries the tasks it parked because their tenant was at its limit, and releases the
# slots of tasks that ended in a way the pool did not report.
TENANT_SLOT_POLL_SECONDS = 0.05
# A task parked because its tenant is at its limit goes back to the end of its queue after this long, well
# before RabbitMQ's consumer_timeout (15 min) would close the worker's channel over the unacked message.
TENANT_PARK_MAX_SECONDS = env_int("TENANT_PARK_MAX_SECONDS", 300)
# Deleting a tenant waits this long for its running tasks to finish before its schema is dropped.
TENANT_DELETE_DRAIN_SECONDS = env_int("TENANT_DELETE_DRAIN_SECONDS", 60)

# --- Tenant event log ----------------------------------------------------------------------------------
# An event its consumer fails to persist is retried (exponential backoff with jitter from this base, in
# seconds) and parked as `dead` with its last error after this many attempts (conversations.tasks).
INBOUND_EVENT_MAX_ATTEMPTS = env_int("INBOUND_EVENT_MAX_ATTEMPTS", 5)
INBOUND_EVENT_RETRY_BACKOFF_SECONDS = float(env_str("INBOUND_EVENT_RETRY_BACKOFF_SECONDS", "2"))

# --- Metrics -------------------------------------------------------------------------------------------
# `/metrics` on the platform host answers a platform admin's token, or `Authorization: Bearer <this>` when
# set (for a Prometheus scraper without a user account). Empty: platform admin tokens only.
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN", "")

# --- Outbound scheduler (scheduler app) ---------------------------------------------------------------
# Defaults for a new tenant's scheduler setting; each tenant's admin changes its own through the API.
OUTBOUND_INTERVAL_SECONDS = env_int("OUTBOUND_INTERVAL_SECONDS", 120)
OUTBOUND_BATCH_SIZE = env_int("OUTBOUND_BATCH_SIZE", 2)
OUTBOUND_WEBHOOK_URL = env_header_value("OUTBOUND_WEBHOOK_URL", "")
OUTBOUND_AUTH_KEY = env_header_value("OUTBOUND_AUTH_KEY", "")
OUTBOUND_CONTENT_MAX_LENGTH = env_int("OUTBOUND_CONTENT_MAX_LENGTH", 160)
# A run sends its batch in waves of OUTBOUND_SEND_CONCURRENCY parallel requests inside one task: the waves
# (batch max / concurrency, rounded up) x timeout stay under CELERY_TASK_SOFT_TIME_LIMIT.
OUTBOUND_BATCH_SIZE_MAX = env_int("OUTBOUND_BATCH_SIZE_MAX", 20)
OUTBOUND_HTTP_TIMEOUT_SECONDS = env_int("OUTBOUND_HTTP_TIMEOUT_SECONDS", 10)
# Parallel requests of one run (threads of the task, one keep-alive connection each) to the tenant's webhook.
OUTBOUND_SEND_CONCURRENCY = env_int("OUTBOUND_SEND_CONCURRENCY", 16)
# A message claimed by a run that then died is handed out again after this; renewed before each wave, so it
# only has to outlast one request (keep it well above the timeout).
OUTBOUND_LEASE_SECONDS = env_int("OUTBOUND_LEASE_SECONDS", 120)
OUTBOUND_MAX_ATTEMPTS = env_int("OUTBOUND_MAX_ATTEMPTS", 5)
OUTBOUND_RETRY_BASE_SECONDS = env_int("OUTBOUND_RETRY_BASE_SECONDS", 30)
OUTBOUND_RETRY_MAX_SECONDS = env_int("OUTBOUND_RETRY_MAX_SECONDS", 3600)
OUTBOUND_CACHE_TTL_SECONDS = env_int("OUTBOUND_CACHE_TTL_SECONDS", 7 * 24 * 3600)
# SSRF guard (core.outbound_urls): a tenant's webhook_url must resolve to public addresses only, checked when
# it is set and before every request. `local` and `test` turn this on (their receivers run on loopback);
# ALLOWED_HOSTS lets named internal hosts through in production.
OUTBOUND_WEBHOOK_ALLOW_PRIVATE = env_bool("OUTBOUND_WEBHOOK_ALLOW_PRIVATE", False)
OUTBOUND_WEBHOOK_ALLOWED_HOSTS = env_list("OUTBOUND_WEBHOOK_ALLOWED_HOSTS", [])

# --- Logging: every line names the schema it was written in --------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"tenant_context": {"()": "django_tenants.log.TenantContextFilter"}},
    "formatters": {
        "tenant": {"format": "%(asctime)s %(levelname)s [%(schema_name)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["tenant_context"], "formatter": "tenant"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
