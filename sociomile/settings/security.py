"""Secrets, hosts, passwords, request size, sign-in limits, the metrics token. settings.production adds the
HTTPS and cookie hardening (docs/security.md)."""

from sociomile.settings.env import env_bool, env_int, env_list, env_str

# Refused by settings.production; fine for a laptop and the tests.
INSECURE_DEFAULT_SECRET_KEY = "django-insecure-sociomile-local-development-key"
SECRET_KEY = env_str("SECRET_KEY", INSECURE_DEFAULT_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)

# A tenant with slug `acme` is served on `acme.<BASE_DOMAIN>`; the platform on BASE_DOMAIN itself.
BASE_DOMAIN = env_str("BASE_DOMAIN", "localhost")
# Unknown hosts are answered 404 by core.middleware.TenantHostMiddleware, which only lets through
# BASE_DOMAIN and the domains in the tenants_domain table; narrow this further in production if you like.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"])

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

# Request size limit: the API takes small JSON bodies. Every JSON body (core.parsers.JSONParser) and the
# channel webhook's raw body are refused past this with a 413 JSON error before anything is parsed; 1 MiB
# holds the longest message (MESSAGE_MAX_LENGTH characters, even \u-escaped) many times over.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)

# Sign-in (POST /api/auth/token and the admin's login form), per host: attempts counted in a fixed window per
# email and per client address; past either limit, 429 with Retry-After, and the password is not checked.
# A success clears the email's count and takes its attempt back from the address's: the limits count failures.
SIGN_IN_ATTEMPTS_PER_EMAIL = env_int("SIGN_IN_ATTEMPTS_PER_EMAIL", 10)
SIGN_IN_ATTEMPTS_PER_ADDRESS = env_int("SIGN_IN_ATTEMPTS_PER_ADDRESS", 100)
SIGN_IN_WINDOW_SECONDS = env_int("SIGN_IN_WINDOW_SECONDS", 15 * 60)

# The platform's Prometheus endpoint.
# `/metrics` on the platform host answers a platform admin's token, or `Authorization: Bearer <this>` when
# set (for a Prometheus scraper without a user account). Empty: platform admin tokens only.
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN", "")
