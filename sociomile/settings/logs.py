"""Logging: every line names the schema it was written in, the request id of the request it serves (web) or
of the request that enqueued its task (worker), and the task's id and name (core.logging).

LOG_FORMAT=text (default, for people reading a terminal) or json (one object per line, for a log pipeline).
LOG_ACCESS=1 adds one line per request (`sociomile.access`), the line that carries a request's id when nothing
else logs; off by default like gunicorn's own access log: a line per request costs CPU on the request path.
"""

from django.core.exceptions import ImproperlyConfigured

from sociomile.settings.env import env_bool, env_str

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOG_ACCESS = env_bool("LOG_ACCESS", False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"log_context": {"()": "core.logging.LogContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s [%(schema_name)s] %(name)s: %(message)s"},
        "json": {"()": "core.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["log_context"], "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "sociomile.access": {"level": "INFO" if LOG_ACCESS else "WARNING"},
    },
}
