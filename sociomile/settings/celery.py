"""Celery on RabbitMQ, periodic work (tenants.work), and the worker's per-tenant queues and slots (tenants.worker).
CELERY_TIMEZONE follows TIME_ZONE: it is set in base.py."""

from sociomile.settings.env import env_int, env_str

# RabbitMQ: its consumers are pushed messages, so a worker consuming thousands of idle tenant queues costs
# nothing while they are idle (kombu's Redis transport polls one list per queue: docs/architecture.md,
# "Background work", has the measurement). Redis stays for counters, cache, locks and the slot semaphore.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:16672//")
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
# Prefetch: a worker holds at most this many unacknowledged messages per pool process, across all its tenant
# queues. Celery asks RabbitMQ for a *global* (per-channel) prefetch (tasks.py `qos_global`: RabbitMQ >= 3.3),
# so it is that many per process across every queue, not per queue. Once a worker's credit is used up,
# RabbitMQ hands the next free one to a queue picked at random among those with messages ready; with one per
# process (the first rounds' setting), each hand-over of a busy tenant's drain waited for that draw against
# every other busy tenant's: p50 234 ms but p99 2.2 s from a drain's end to its next task's arrival, with 20 busy
# tenants (issue 18's bench). With 4 per process the next tasks are already here, run in arrival order: p99 0.56 s
# (docs/architecture.md, "Fifth round"). The price: a busy worker holds up to 4 x its processes in messages
# another worker could run; a tenant at its cap is still paused on this worker (tenants.worker), so its backlog
# is not what fills them.
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4)
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
# A pool process keeps its PostgreSQL connection from task to task, as a web process keeps its connection
# from request to request: closed once unusable (an error it did not recover from), after
# DATABASE_CONN_MAX_AGE, and checked before reuse (CONN_HEALTH_CHECKS) — Django's close_old_connections,
# run after every task (sociomile/celery.py). Celery's Django fixup otherwise closed it after every task, so
# every drain turn paid a new connection: TCP, authentication, a new backend, and that backend's catalog
# caches filled again for every table and index the batch touches. The fixup still closes it every this
# many tasks.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_SEND_TASK_EVENTS = False
# Workers log through LOGGING (logs.py), so their lines carry the tenant's schema too.
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
