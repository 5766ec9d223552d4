"""The conversations app: message limits, the drain of queued creations, the inbound webhook, the event log."""

from sociomile.settings.env import env_int, env_str

# --- Messages and the drain of queued creations (conversations.creations) ---------------------------------
MESSAGE_MAX_LENGTH = env_int("MESSAGE_MAX_LENGTH", 10_000)
# Queued chat and message creations persisted per transaction by one drain (conversations.services).
CREATIONS_BATCH_SIZE = env_int("CREATIONS_BATCH_SIZE", 1000)
# The one drain of a tenant holds a lease, renewed before each batch; a drain whose worker was killed blocks
# the tenant's drains for at most this long. It only has to outlast one batch (one transaction).
CREATIONS_LOCK_LEASE_SECONDS = env_int("CREATIONS_LOCK_LEASE_SECONDS", 30)
# A drain whose batch is not full waits this long once for more records before persisting it. 0 (the default):
# no wait. The wait holds a pool process idle while other tenants' drains queue for one; under load batches grow
# anyway, from what arrives while a tenant waits for its turn (issue 18). Worth setting only for a deployment
# with one busy tenant and processes to spare.
CREATIONS_DRAIN_LINGER_MS = env_int("CREATIONS_DRAIN_LINGER_MS", 0)
# How long one drain task keeps persisting batches before it hands over to a new task at the back of the tenant's
# queue. 0 (the default): one batch per task, so busy tenants take turns batch by batch. It is a pool process's
# time slice between busy tenants: a tenant's records wait about (draining tenants / processes) x the slice for
# their drain's next turn, and a longer slice only spent it on the few records that came meanwhile, each batch
# paying the batch's fixed cost again (issue 18: 0.5 s gave create -> readable p50 1.3 s / p99 11 s at 20 busy
# tenants on 4 processes, 0 gave 0.65 s / 4.0 s, docs/architecture.md).
CREATIONS_DRAIN_MAX_SECONDS = float(env_str("CREATIONS_DRAIN_MAX_SECONDS", "0"))
# A drain runs the assignment for the chats it persisted in its own process (no task per batch): after its
# first batch, then at most this often while batches keep coming, and once when it ends.
CREATIONS_DRAIN_ASSIGN_EVERY_MS = env_int("CREATIONS_DRAIN_ASSIGN_EVERY_MS", 100)

# --- Inbound channel webhook (conversations.inbound) -----------------------------------------------------
# Deliveries accepted per application per window (a fixed window counted in Redis, across web processes);
# the one over the limit is answered 429 with Retry-After.
WEBHOOK_RATE_LIMIT = env_int("WEBHOOK_RATE_LIMIT", 600)
WEBHOOK_RATE_WINDOW_SECONDS = env_int("WEBHOOK_RATE_WINDOW_SECONDS", 60)
# How long the answer to a delivery with an external_id is kept: a repeat within it gets the same answer.
WEBHOOK_IDEMPOTENCY_TTL_SECONDS = env_int("WEBHOOK_IDEMPOTENCY_TTL_SECONDS", 24 * 3600)

# --- Tenant event log ----------------------------------------------------------------------------------
# An event its consumer fails to persist is retried (exponential backoff with jitter from this base, in
# seconds) and parked as `dead` with its last error after this many attempts (conversations.tasks).
INBOUND_EVENT_MAX_ATTEMPTS = env_int("INBOUND_EVENT_MAX_ATTEMPTS", 5)
INBOUND_EVENT_RETRY_BACKOFF_SECONDS = float(env_str("INBOUND_EVENT_RETRY_BACKOFF_SECONDS", "2"))
