import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _import_production_settings(secret_key: str | None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "SECRET_KEY"}
    env["DJANGO_SETTINGS_MODULE"] = "sociomile.settings.production"
    if secret_key is not None:
        env["SECRET_KEY"] = secret_key
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_production_refuses_the_default_secret():
    result = _import_production_settings(None)

    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_production_starts_with_a_real_secret_and_debug_off():
    result = _import_production_settings("x" * 50)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_an_outbound_auth_key_or_webhook_url_that_is_not_visible_ascii_is_refused_at_start(monkeypatch):
    # the defaults a new tenant's scheduler starts with: the API refuses such values, so must the environment
    import pytest
    from django.core.exceptions import ImproperlyConfigured

    from sociomile.settings.env import env_header_value

    for value in ("key\r\nX-Injected: yes", "cl\u00e9", "two words"):
        monkeypatch.setenv("OUTBOUND_AUTH_KEY", value)
        with pytest.raises(ImproperlyConfigured) as error:
            env_header_value("OUTBOUND_AUTH_KEY", "")
        assert value not in str(error.value)  # a secret is never echoed
    monkeypatch.setenv("OUTBOUND_AUTH_KEY", "a-Good_key.123")
    assert env_header_value("OUTBOUND_AUTH_KEY", "") == "a-Good_key.123"
    monkeypatch.delenv("OUTBOUND_AUTH_KEY")
    assert env_header_value("OUTBOUND_AUTH_KEY", "") == ""


def test_each_setting_is_defined_in_one_concern_module():
    # sociomile/settings/base.py gathers the modules by concern with `import *`: a name set in two of them
    # would silently take the value of whichever is imported last.
    import importlib
    from collections import Counter

    names = Counter()
    for module in ("agents", "api", "celery", "conversations", "database", "logs", "redis", "scheduler", "security", "tenancy"):
        settings_module = importlib.import_module(f"sociomile.settings.{module}")
        names.update(name for name in vars(settings_module) if name.isupper())
    assert [name for name, count in names.items() if count > 1] == []
    assert len(names) > 90
