"""The domain errors (core.exceptions) and the one handler that maps them to HTTP."""

import ast
from pathlib import Path

import pytest
from rest_framework.test import APIRequestFactory

from core.exceptions import (
    ApplicationError,
    Conflict,
    NotFound,
    RetryLater,
    SignInThrottled,
    exception_handler,
)

ROOT = Path(__file__).resolve().parents[2]


def _answer(error: Exception):
    request = APIRequestFactory().get("/")
    return exception_handler(error, {"request": None, "view": None, "args": (), "kwargs": {}, "_request": request})


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (ApplicationError("Refused."), 400, None),
        (NotFound("No such thing."), 404, None),
        (Conflict("Already resolved."), 409, None),
        (RetryLater("Still being created.", seconds=3), 409, "3"),
        (SignInThrottled(seconds=1), 429, "1"),
    ],
)
def test_each_domain_error_is_answered_at_its_status_with_its_message(error, status, retry_after):
    response = _answer(error)

    assert response.status_code == status
    assert response.data == {"detail": str(error)}
    assert response.get("Retry-After") == retry_after


def test_the_sign_in_refusal_says_when_to_try_again():
    assert str(SignInThrottled(seconds=1)) == "Too many sign-in attempts. Try again in 1 second."
    assert str(SignInThrottled(seconds=59.2)) == "Too many sign-in attempts. Try again in 60 seconds."


def test_a_domain_error_without_a_message_has_its_default():
    assert str(Conflict()) == "The request conflicts with the current state."


# Where business code lives: it raises domain errors and never touches DRF's exceptions or `.detail`, so the
# same function serves an API view, an admin action, a task and a management command alike.
_BUSINESS_MODULES = [
    path
    for pattern in ("*/services.py", "*/*/services.py", "*/services/*.py", "*/selectors.py", "*/admin.py", "*/*/admin.py", "*/admin_actions.py")
    for path in ROOT.glob(pattern)
    if ".venv" not in path.parts
]


@pytest.mark.parametrize("path", _BUSINESS_MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_business_code_raises_no_drf_exception_and_reads_no_detail(path):
    tree = ast.parse(path.read_text())
    offences = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "rest_framework.exceptions":
            offences.append(f"line {node.lineno}: imports rest_framework.exceptions")
        if isinstance(node, ast.ImportFrom) and node.module == "rest_framework":
            if any(alias.name == "exceptions" for alias in node.names):
                offences.append(f"line {node.lineno}: imports rest_framework.exceptions")
        if isinstance(node, ast.Attribute) and node.attr == "detail":
            offences.append(f"line {node.lineno}: reads .detail")
    assert offences == []
