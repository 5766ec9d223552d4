"""Settings shared by every environment. Everything deployment-specific comes from the environment.

Split by concern, one module each (as HackSoft's config/settings/): this module holds Django's own framework
settings and gathers the others, so `local`, `test` and `production` import this one and override names as
before. New settings go to the module of their concern, in a block of their own.

| Module | What |
| --- | --- |
| `security.py` | secret key, debug, hosts, password hashing, request size, sign-in limits, metrics token |
| `database.py` | PostgreSQL (django-tenants' backend and router) |
| `tenancy.py` | shared and tenant apps, the tenant models and URL confs, the template schema, reserved slugs |
| `redis.py` | REDIS_URL and Django's cache |
| `api.py` | REST framework and OpenAPI |
| `celery.py` | the broker, Celery, periodic work, tenant queues and slots |
| `conversations.py`, `agents.py`, `scheduler.py`, `events.py`, `routing.py` | each app's limits and behaviour |
| `logs.py` | logging (every line names its schema) |
| `workspace.py` | the agent workspace: attachments' limits and URL rule |
"""

from pathlib import Path

from sociomile.settings.agents import *  # noqa: F403
from sociomile.settings.api import *  # noqa: F403
from sociomile.settings.celery import *  # noqa: F403
from sociomile.settings.conversations import *  # noqa: F403
from sociomile.settings.database import *  # noqa: F403
from sociomile.settings.events import *  # noqa: F403
from sociomile.settings.logs import *  # noqa: F403
from sociomile.settings.privacy import *  # noqa: F403
from sociomile.settings.redis import *  # noqa: F403
from sociomile.settings.reports import *  # noqa: F403
from sociomile.settings.routing import *  # noqa: F403
from sociomile.settings.scheduler import *  # noqa: F403
from sociomile.settings.security import *  # noqa: F403
from sociomile.settings.stream import *  # noqa: F403
from sociomile.settings.tenancy import *  # noqa: F403
from sociomile.settings.workspace import *  # noqa: F403

BASE_DIR = Path(__file__).resolve().parent.parent.parent

AUTH_USER_MODEL = "core.User"

MIDDLEWARE = [
    # First: the request's id (X-Request-ID, made if absent or insane) is on every log line, every task the
    # request enqueues and the response, an early 400 or 404 included (core/middleware.py, core/logging.py).
    "core.middleware.RequestIdMiddleware",
    # Next: after a response given without reading a large body (a 413, a 401...), reads and discards
    # it, so the client's keep-alive connection stays usable (core/middleware.py).
    "core.middleware.UnreadBodyDrainMiddleware",
    # Liveness (/health/live) answered before anything touches PostgreSQL or Redis (core/middleware.py).
    "core.middleware.LivenessMiddleware",
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
    # The request's user (session, or DRF's token once the view authenticates) is the audit log's actor.
    "core.middleware.ActorMiddleware",
    # django.contrib.messages' middleware, its storage built only when the admin uses it (core/middleware.py).
    "core.middleware.LazyMessageMiddleware",
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

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Celery's clock is Django's (the rest of Celery's settings: celery.py).
CELERY_TIMEZONE = TIME_ZONE
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
