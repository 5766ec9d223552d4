"""Production settings plus the one trivial endpoint the benchmark compares against."""

import os

os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-0123456789abcdef")

from sociomile.settings.production import *  # noqa: E402,F403

ROOT_URLCONF = "bench.urls_tenants"
SECURE_SSL_REDIRECT = False
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
# The outbound scenario's receiver listens on loopback.
OUTBOUND_WEBHOOK_ALLOW_PRIVATE = True
