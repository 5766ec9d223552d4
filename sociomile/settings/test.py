"""The test suite: real PostgreSQL and Redis started by `bin/test` (their URLs come from the environment)."""

from sociomile.settings.base import *  # noqa: F403

DEBUG = False
# Hashing passwords at full strength costs ~0.3 s a user; the tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Workers started by the tests reconcile their tenant queues fast.
TENANT_QUEUE_SYNC_SECONDS = 1
# A failing event is parked after a few quick attempts.
INBOUND_EVENT_MAX_ATTEMPTS = 3
INBOUND_EVENT_RETRY_BACKOFF_SECONDS = 0.1
# The tests' webhook receivers listen on loopback; core/tests/test_security.py turns the guard back on.
OUTBOUND_WEBHOOK_ALLOW_PRIVATE = True
