"""Events: outgoing webhooks (events app): retries, timeouts, leases, secret rotation, deactivation."""

from django.core.exceptions import ImproperlyConfigured

from sociomile.settings.env import env_int, env_list

# --- Events: outgoing webhooks (events app) ----------------------------------------------------------
# Delays before the retries of a failed delivery (with jitter: each is drawn from 0.8x to 1.2x); after the
# last one fails the delivery is `dead`. PRODUCT.md's schedule: about 5 s, 1 min, 5 min, 30 min, 2 h, 8 h, 24 h.
EVENTS_RETRY_SCHEDULE_SECONDS = [int(value) for value in env_list(
    "EVENTS_RETRY_SCHEDULE_SECONDS", ["5", "60", "300", "1800", "7200", "28800", "86400"]
)]  # fmt: skip
# Per request (PRODUCT.md: a timeout of 10 s is a failure).
EVENTS_HTTP_TIMEOUT_SECONDS = env_int("EVENTS_HTTP_TIMEOUT_SECONDS", 10)
# A run is a pipeline (events.delivery): it claims more while earlier requests are in flight. Threads of one
# run (all endpoints), and requests in flight to one endpoint: a slow or timing-out endpoint holds at most its
# own share, so keep EVENTS_SEND_CONCURRENCY above EVENTS_ENDPOINT_CONCURRENCY. One keep-alive connection per
# in-flight request of an endpoint.
EVENTS_SEND_CONCURRENCY = env_int("EVENTS_SEND_CONCURRENCY", 32)
EVENTS_ENDPOINT_CONCURRENCY = env_int("EVENTS_ENDPOINT_CONCURRENCY", 16)
# Deliveries of one endpoint a run holds claimed and unanswered (waiting for a thread or in flight): the run
# claims again once a quarter of it is free, so what waits must outlast the run's own claim and outcome writes
# (answers keep coming meanwhile) or the threads idle; small enough that a slow endpoint's leases cover little
# (they are handed back at EVENTS_RUN_MAX_SECONDS).
EVENTS_ENDPOINT_WINDOW = env_int("EVENTS_ENDPOINT_WINDOW", 512)
# Deliveries a run holds claimed and unanswered over all endpoints.
EVENTS_DELIVERY_BATCH = env_int("EVENTS_DELIVERY_BATCH", 1024)
# A run stops claiming and starting after this, hands back what it had not started and awaits what is in
# flight; then the tenant's next run continues (sent by the dispatcher). Its whole length is this plus one
# request (connect and read timeouts): keep that well under CELERY_TASK_SOFT_TIME_LIMIT.
EVENTS_RUN_MAX_SECONDS = env_int("EVENTS_RUN_MAX_SECONDS", 20)
# A delivery claimed by a run that then died is due again after this (same webhook-id); renewed while the
# run goes on, so it only has to outlast one request: keep it well above the timeout.
EVENTS_LEASE_SECONDS = env_int("EVENTS_LEASE_SECONDS", 60)
# After a secret rotation the old secret still signs (a second signature) for this long.
EVENTS_SECRET_ROTATION_OVERLAP_SECONDS = env_int("EVENTS_SECRET_ROTATION_OVERLAP_SECONDS", 24 * 3600)
# A rotation this soon after the last one is refused (409): a double submit rotates once.
EVENTS_SECRET_ROTATION_MIN_INTERVAL_SECONDS = env_int("EVENTS_SECRET_ROTATION_MIN_INTERVAL_SECONDS", 60)
# An endpoint whose every attempt failed for this long is deactivated (is_active false, the admin shows it).
EVENTS_ENDPOINT_DEACTIVATE_AFTER_SECONDS = env_int("EVENTS_ENDPOINT_DEACTIVATE_AFTER_SECONDS", 24 * 3600)
# Events (with their deliveries and attempts) older than this are deleted, once no delivery of theirs is
# unfinished (events.retention). Never below 2 days: the stream replays the last 24 h from the outbox.
EVENTS_RETENTION_DAYS = env_int("EVENTS_RETENTION_DAYS", 30)
if EVENTS_RETENTION_DAYS < 2:
    raise ImproperlyConfigured("EVENTS_RETENTION_DAYS must be at least 2 (the stream replays 24 h of events)")
# Events deleted per transaction by the retention task.
EVENTS_RETENTION_BATCH = env_int("EVENTS_RETENTION_BATCH", 1000)
