"""The sign-in limit (core.services.user_sign_in): attempts counted per email and per client address, in Redis,
per host; past a limit, 429 with Retry-After before any password is checked."""

import hashlib
import threading

import pytest
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context
from rest_framework.authtoken.models import Token

from core.tests.support import api_client, host_of, make_user, PASSWORD
from core.models import User
from core.redis import get_redis, tenant_key

THROTTLED = "Too many sign-in attempts."


@pytest.fixture
def limits(settings):
    settings.SIGN_IN_ATTEMPTS_PER_EMAIL = 3
    settings.SIGN_IN_ATTEMPTS_PER_ADDRESS = 5
    settings.SIGN_IN_WINDOW_SECONDS = 600
    return settings


@pytest.fixture(autouse=True)
def _forget_public_sign_in_counts():
    # Tenant keys are cleared by the tenant fixtures; the platform host's sign-in counts are cleared here.
    yield
    redis = get_redis()
    keys = list(redis.scan_iter("sociomile:public:sign-in:*"))
    if keys:
        redis.delete(*keys)


def sign_in(tenant, email, password, **extra):
    return api_client(tenant=tenant).post("/api/auth/token", {"email": email, "password": password}, **extra)


def tokens_in(tenant) -> int:
    with schema_context(tenant.schema_name):
        return Token.objects.count()


def test_past_the_email_limit_even_the_right_password_is_a_429_with_retry_after(tenant_a, limits):
    # given three wrong passwords for one account
    for _ in range(3):
        assert sign_in(tenant_a, "admin@alpha.test", "wrong-password").status_code == 400

    # when the right one comes next
    response = sign_in(tenant_a, "admin@alpha.test", PASSWORD)

    # then it is refused for the rest of the window, and no token is made
    assert response.status_code == 429
    assert response.json() == {"detail": f"{THROTTLED} Try again in {response['Retry-After']} seconds."}
    assert 590 <= int(response["Retry-After"]) <= 600
    assert tokens_in(tenant_a) == 0


def test_the_email_is_counted_whatever_its_case(tenant_a, limits):
    for email in ("Admin@alpha.test", "ADMIN@ALPHA.TEST", "admin@Alpha.Test"):
        assert sign_in(tenant_a, email, "wrong-password").status_code == 400

    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD).status_code == 429


def test_a_refused_attempt_does_not_check_the_password(tenant_a, limits, monkeypatch):
    for _ in range(3):
        sign_in(tenant_a, "admin@alpha.test", "wrong-password")
    checked = []
    monkeypatch.setattr("core.services.authenticate", lambda *args, **kwargs: checked.append(kwargs))

    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD).status_code == 429
    assert checked == []


def test_a_success_clears_the_email_count(tenant_a, limits):
    # given two failures, then a success
    for _ in range(2):
        assert sign_in(tenant_a, "admin@alpha.test", "wrong-password").status_code == 400
    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD).status_code == 200

    # then three more failures are allowed before the limit
    for _ in range(3):
        assert sign_in(tenant_a, "admin@alpha.test", "wrong-password").status_code == 400
    assert sign_in(tenant_a, "admin@alpha.test", "wrong-password").status_code == 429


def test_successes_do_not_use_up_the_address_limit(tenant_a, limits):
    for _ in range(12):
        assert sign_in(tenant_a, "admin@alpha.test", PASSWORD).status_code == 200


def test_failures_across_emails_from_one_address_hit_the_address_limit(tenant_a, limits):
    # given five failures from one address, each for another email
    for index in range(5):
        assert (
            sign_in(tenant_a, f"guess{index}@alpha.test", "wrong-password", REMOTE_ADDR="203.0.113.7").status_code
            == 400
        )

    # then that address is refused, the right password included, while another address still signs in
    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD, REMOTE_ADDR="203.0.113.7").status_code == 429
    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD, REMOTE_ADDR="203.0.113.8").status_code == 200


def test_a_forwarded_for_header_is_ignored_without_proxies_of_ours(tenant_a, limits):
    # A client writing its own X-Forwarded-For must not get a new address per attempt.
    for index in range(5):
        response = sign_in(tenant_a, f"guess{index}@alpha.test", "x", HTTP_X_FORWARDED_FOR=f"198.51.100.{index}")
        assert response.status_code == 400

    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.99").status_code == 429


def test_behind_one_proxy_of_ours_the_address_is_the_last_forwarded_one(tenant_a, limits):
    limits.REST_FRAMEWORK = {**limits.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for index in range(5):
        # the client may prepend anything; the proxy appends what it saw
        response = sign_in(tenant_a, f"g{index}@alpha.test", "x", HTTP_X_FORWARDED_FOR=f"10.9.9.{index}, 203.0.113.7")
        assert response.status_code == 400

    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 200


def test_a_lockout_on_one_tenant_touches_no_other_host(tenant_a, tenant_b, limits):
    # given the same email on tenant B and on the platform host
    make_user(tenant=tenant_b, role=User.Role.ADMIN, email="admin@alpha.test")
    make_user(tenant=None, role=User.Role.PLATFORM_ADMIN, email="admin@alpha.test")
    for _ in range(3):
        sign_in(tenant_a, "admin@alpha.test", "wrong-password")
    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD).status_code == 429

    # then B and the platform host still let it in, and A's counts are in A's key space only
    assert sign_in(tenant_b, "admin@alpha.test", PASSWORD).status_code == 200
    assert sign_in(None, "admin@alpha.test", PASSWORD).status_code == 200
    redis = get_redis()
    counts = {key.decode(): int(redis.get(key)) for key in redis.scan_iter("sociomile:*sign-in*")}
    email_hash = hashlib.sha256(b"admin@alpha.test").hexdigest()[:32]  # the email goes in hashed
    assert counts == {
        f"sociomile:alpha:sign-in:email:{email_hash}": 4,  # three failures and the refused attempt
        "sociomile:alpha:sign-in:address:127.0.0.1": 4,
        "sociomile:beta:sign-in:address:127.0.0.1": 0,  # a success takes its attempt back
        "sociomile:public:sign-in:address:127.0.0.1": 0,
    }


def test_concurrent_guesses_get_exactly_the_limit_of_password_checks(tenant_a, limits):
    # given 16 threads guessing at once (the account was committed when the session tenant was made)
    limits.SIGN_IN_ATTEMPTS_PER_EMAIL = 4
    limits.SIGN_IN_ATTEMPTS_PER_ADDRESS = 1000
    statuses, barrier = [], threading.Barrier(16)

    def guess():
        try:
            barrier.wait()
            statuses.append(sign_in(tenant_a, "admin@alpha.test", "wrong-password").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=guess) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then exactly four were checked (400) and twelve refused unchecked (429)
    assert sorted(statuses) == [400] * 4 + [429] * 12


def test_the_admin_login_counts_against_the_same_limit(tenant_a, limits):
    # given two wrong passwords through the admin and one through the API
    client = Client(HTTP_HOST=host_of(tenant_a))
    for _ in range(2):
        response = client.post(
            "/admin/login/", {"username": "admin@alpha.test", "password": "wrong", "next": "/admin/"}
        )
        assert response.status_code == 200
        assert b"Please enter the correct email" in response.content
    assert sign_in(tenant_a, "admin@alpha.test", "wrong-password").status_code == 400

    # when the right password comes through the admin
    response = client.post("/admin/login/", {"username": "admin@alpha.test", "password": PASSWORD, "next": "/admin/"})

    # then the form says why, and nobody is signed in
    assert response.status_code == 200
    assert THROTTLED.encode() in response.content
    assert client.get("/admin/").status_code == 302


def test_the_window_ends(tenant_a, limits):
    limits.SIGN_IN_WINDOW_SECONDS = 1
    for _ in range(3):
        sign_in(tenant_a, "admin@alpha.test", "wrong-password")
    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD).status_code == 429

    keys = list(get_redis().scan_iter(f"{tenant_key(tenant_a.schema_name, 'sign-in')}:*"))
    assert keys and all(0 < get_redis().pttl(key) <= 1000 for key in keys)
    for key in keys:  # what the window's end does, without sleeping through it
        get_redis().delete(key)
    assert sign_in(tenant_a, "admin@alpha.test", PASSWORD).status_code == 200


def test_with_redis_unreachable_sign_in_fails_closed(tenant_a, limits, monkeypatch):
    import redis

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr("core.services.window_count", unreachable)
    client = api_client(tenant=tenant_a)
    client.raise_request_exception = False  # as in production: Django's handler500 answers

    response = client.post("/api/auth/token", {"email": "admin@alpha.test", "password": PASSWORD})

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json() == {"detail": "Service temporarily unavailable (redis); retry shortly."}
    assert tokens_in(tenant_a) == 0


def test_an_admin_lifts_a_lockout_from_the_user_list(tenant_a, limits):
    # given an agent locked out by failed sign-ins, and another user who never failed
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    bystander = make_user(tenant=tenant_a, role=User.Role.AGENT)
    for _ in range(3):
        sign_in(tenant_a, agent.email, "wrong-password", REMOTE_ADDR="203.0.113.9")
    assert sign_in(tenant_a, agent.email, PASSWORD, REMOTE_ADDR="203.0.113.10").status_code == 429

    # when the tenant's admin runs the action on both in its admin
    client = Client(HTTP_HOST=host_of(tenant_a))
    assert client.post("/admin/login/", {"username": "admin@alpha.test", "password": PASSWORD}).status_code == 302
    page = client.post(
        "/admin/core/user/", {"action": "unlock_sign_in", "_selected_action": [agent.pk, bystander.pk]}, follow=True
    )

    # then the agent signs in again at once, and the page says whom it unlocked
    assert page.status_code == 200
    assert f"Sign-in lockout lifted for {agent.email}.".encode() in page.content
    assert sign_in(tenant_a, agent.email, PASSWORD, REMOTE_ADDR="203.0.113.10").status_code == 200
