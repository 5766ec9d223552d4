"""Production: everything from the environment; refuses to start with the development secret.

`manage.py check --deploy --fail-level WARNING` passes with these settings (core/tests/test_security.py);
what each one does and how to change it: docs/security.md.
"""

from django.core.exceptions import ImproperlyConfigured

from sociomile.settings.base import *  # noqa: F403
from sociomile.settings.base import BASE_DOMAIN, INSECURE_DEFAULT_SECRET_KEY, SECRET_KEY
from sociomile.settings.env import env_bool, env_int, env_list

if not SECRET_KEY or SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("Set SECRET_KEY to a random string of at least 32 characters in production.")

DEBUG = False
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
# TLS ends at the proxy in front of us, which says so in X-Forwarded-Proto (make sure it overwrites a
# client's own header). Plain HTTP is redirected, except /health: load balancers probe it over HTTP.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^health$"]
# A year of HSTS on the platform host and every tenant host (all are `*.<BASE_DOMAIN>`, served by us over
# HTTPS). Set SECURE_HSTS_SECONDS=0 for a deployment without TLS, e.g. docker compose on a laptop.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # security.W021 asks for HSTS preload. Preloading submits the domain to browser vendors' lists and is
    # hard to undo, so it is an owner's decision for a real domain (SECURE_HSTS_PRELOAD=true), not a default.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
# The admin's forms (the only cookie/CSRF users; the API uses tokens) come from our own hosts over HTTPS.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [f"https://{BASE_DOMAIN}", f"https://*.{BASE_DOMAIN}"])
