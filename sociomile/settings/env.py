"""Reading configuration from the environment, with the local defaults of `bin/dev`."""

import os
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_header_value(name: str, default: str) -> str:
    """A value sent as it is in an HTTP header or request line (an auth key, a URL): visible ASCII only, as the
    API requires of the same values (core.text.visible_ascii_validator). Refused at start, not at every send."""
    value = os.environ.get(name, default)
    if not all("\x21" <= character <= "\x7e" for character in value):
        # Not the value itself: it may be a secret.
        raise ImproperlyConfigured(f"{name} must be visible ASCII (no spaces, line breaks or non-ASCII)")
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean, got {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from error


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """`postgres://user:password@host:port/name?sslmode=...` -> a Django DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL, got scheme {parts.scheme!r}")
    options = dict(item.split("=", 1) for item in parts.query.split("&") if "=" in item)
    return {
        # django-tenants' backend sets search_path per tenant on top of Django's PostgreSQL backend.
        "ENGINE": "django_tenants.postgresql_backend",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
    }
