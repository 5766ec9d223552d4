"""Helpers every app's tests use: API clients per host, users and tokens, polling. Plain functions, imported
by test modules (fixtures are in core/tests/fixtures/, registered by the root conftest.py)."""

import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django_tenants.utils import get_public_schema_name, schema_context
from rest_framework.test import APIClient

from core.models import User
from core.services import user_create, user_token_get_or_create
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parents[2]
TEST_OUTPUT = ROOT / "test-output"
PASSWORD = "test-password-1234"


def wait_for(predicate, *, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    """Polls until predicate() is truthy and returns its value; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def host_of(tenant: Tenant | None) -> str:
    return settings.BASE_DOMAIN if tenant is None else f"{tenant.schema_name}.{settings.BASE_DOMAIN}"


def api_client(*, tenant: Tenant | None = None, token: str | None = None) -> APIClient:
    """A DRF test client speaking JSON to the platform host (tenant=None) or to a tenant's host."""
    client = APIClient(HTTP_HOST=host_of(tenant))
    client.default_format = "json"
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def make_user(*, tenant: Tenant | None, role: str, email: str | None = None) -> User:
    schema = get_public_schema_name() if tenant is None else tenant.schema_name
    with schema_context(schema):
        return user_create(email=email or f"{role}-{uuid.uuid4().hex[:8]}@example.test", password=PASSWORD, role=role)


def token_for(user: User, *, tenant: Tenant | None) -> str:
    schema = get_public_schema_name() if tenant is None else tenant.schema_name
    with schema_context(schema):
        return user_token_get_or_create(user=user).key
