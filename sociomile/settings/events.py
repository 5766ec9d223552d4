"""Events: outgoing webhooks (events app): retries, timeouts, leases, secret rotation, deactivation."""

from sociomile.settings.env import env_int, env_list

# --- Events: outgoing webhooks (events app) ----------------------------------------------------------
# Delays before the retries of a failed delivery (with jitter: each is drawn from 0.8x to 1.2x); after the
# last one fails the delivery is `dead`. PRODUCT.md's schedule: about 5 s, 1 min, 5 min, 30 min, 2 h, 8 h, 24 h.
EVENTS_RETRY_SCHEDULE_SECONDS = [int(value) for value in env_list(
    "EVENTS_RETRY_SCHEDULE_SECONDS", ["5", "60", "300", "1800", "7200", "28800", "86400"]
)]  # fmt: skip
# Per request (PRODUCT.md: a timeout of 10 s is a failure).
EVENTS_HTTP_TIMEOUT_SECONDS = env_int("EVENTS_HTTP_TIMEOUT_SECONDS", 10)
# Parallel requests of one delivery run (threads of the task, one keep-alive connection each per endpoint).
EVENTS_SEND_CONCURRENCY = env_int("EVENTS_SEND_CONCURRENCY", 16)
# Deliveries claimed per round of a run; a run goes round after round while deliveries are due, up to
# EVENTS_RUN_MAX_SECONDS, then the tenant's next run continues (sent by the run itself or the dispatcher).
EVENTS_DELIVERY_BATCH = env_int("EVENTS_DELIVERY_BATCH", 200)
EVENTS_RUN_MAX_SECONDS = env_int("EVENTS_RUN_MAX_SECONDS", 20)
# A delivery claimed by a run that then died is due again after this (same webhook-id); renewed while the
# run goes on, so it only has to outlast one request: keep it well above the timeout.
EVENTS_LEASE_SECONDS = env_int("EVENTS_LEASE_SECONDS", 60)
# After a secret rotation the old secret still signs (a second signature) for this long.
EVENTS_SECRET_ROTATION_OVERLAP_SECONDS = env_int("EVENTS_SECRET_ROTATION_OVERLAP_SECONDS", 24 * 3600)
# An endpoint whose every attempt failed for this long is deactivated (is_active false, the admin shows it).
EVENTS_ENDPOINT_DEACTIVATE_AFTER_SECONDS = env_int("EVENTS_ENDPOINT_DEACTIVATE_AFTER_SECONDS", 24 * 3600)
