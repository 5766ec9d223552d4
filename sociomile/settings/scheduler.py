"""The scheduler app: outbound messages' defaults, sending, retries, and the webhook SSRF guard."""

from sociomile.settings.env import env_bool, env_header_value, env_int, env_list

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
