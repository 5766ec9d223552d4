"""One run of the outbound job against a real HTTP receiver, real PostgreSQL and real Redis."""

import contextlib
import json
import logging
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

from core.tests.fixtures.webhooks import _handler, Reply, _Server, WebhookReceiver

from core.tests.support import nested_loop_plan_of, wait_for
from core.redis import get_redis
from scheduler.models import OutboundMessage, SchedulerSetting
from scheduler.services import (
    outbound_cache_key,
    outbound_retry_delay,
    outbound_send_due,
    scheduler_start,
    scheduler_stop,
    scheduler_update,
)
from scheduler.tests.factories import make_outbound_messages


@pytest.fixture
def configured_a(tenant_a, webhook_receiver):
    """Tenant A's job pointed at the receiver; the test then runs inside A's schema."""
    with schema_context(tenant_a.schema_name):
        scheduler_update(webhook_url=webhook_receiver.url, auth_key="secret-a", batch_size=2)
        yield tenant_a


def _cached(message: OutboundMessage) -> dict | None:
    raw = get_redis().get(outbound_cache_key(schema_name=connection.schema_name, message_id=message.id))
    return json.loads(raw) if raw else None


def _later(seconds: float = 3600):
    return timezone.now() + timedelta(seconds=seconds)


def test_one_run_sends_exactly_batch_size_oldest_pending_messages(configured_a, webhook_receiver):
    # given five pending messages, created oldest first, and one already sent
    messages = make_outbound_messages(5)
    already_sent = OutboundMessage.objects.create(to="+15550000001", content="old", status=OutboundMessage.Status.SENT)

    # when one run goes
    summary = outbound_send_due()

    # then exactly the two oldest were POSTed (in parallel: in either order), with the right body and headers
    received = sorted(webhook_receiver.received(), key=lambda request: request.body["content"])
    assert [request.body for request in received] == [
        {"to": "+6281234560000", "content": "message 0"},
        {"to": "+6281234560001", "content": "message 1"},
    ]
    assert [request.headers["idempotency-key"] for request in received] == [str(messages[0].id), str(messages[1].id)]
    assert {request.headers["x-ins-auth-key"] for request in received} == {"secret-a"}
    assert {request.headers["content-type"] for request in received} == {"application/json"}
    assert {request.path for request in received} == {"/hook"}
    assert summary.sent == [messages[0].id, messages[1].id]

    # and the messageId is stored in the row and cached in Redis under the tenant's key
    first, second = (OutboundMessage.objects.get(id=message.id) for message in messages[:2])
    # the receiver numbers its answers in arrival order: each row holds the id answered to its own request
    answered = {request.headers["idempotency-key"]: f"msg-{number}" for number, request in enumerate(webhook_receiver.received(), 1)}
    assert (first.status, first.message_id, first.attempts, first.last_error) == ("sent", answered[str(first.id)], 1, None)
    assert (second.status, second.message_id, second.attempts) == ("sent", answered[str(second.id)], 1)
    assert first.sent_at is not None and first.claim_token is None and first.lease_expires_at is None
    assert _cached(first) == {"messageId": first.message_id, "sent_at": first.sent_at.isoformat()}
    assert _cached(second) == {"messageId": second.message_id, "sent_at": second.sent_at.isoformat()}
    ttl = get_redis().ttl(outbound_cache_key(schema_name=connection.schema_name, message_id=first.id))
    assert django_settings.OUTBOUND_CACHE_TTL_SECONDS - 60 < ttl <= django_settings.OUTBOUND_CACHE_TTL_SECONDS
    assert outbound_cache_key(schema_name="alpha", message_id=first.id) == f"sociomile:alpha:outbound:{first.id}"

    # and the rest is untouched
    rest = OutboundMessage.objects.filter(id__in=[message.id for message in messages[2:]])
    assert sorted(rest.values_list("status", "attempts", "message_id")) == [("pending", 0, None)] * 3
    assert OutboundMessage.objects.get(id=already_sent.id).attempts == 0
    assert _cached(messages[2]) is None

    # and the next run takes the next two
    outbound_send_due()
    assert sorted(webhook_receiver.keys()[2:]) == sorted([str(messages[2].id), str(messages[3].id)])


def test_500_then_202_is_retried_with_backoff_and_sent_once(configured_a, webhook_receiver):
    [message] = make_outbound_messages(1)
    webhook_receiver.script(Reply(status=500, body={"error": "upstream down"}))

    before = timezone.now()
    first = outbound_send_due()

    message.refresh_from_db()
    assert first.retrying == [message.id]
    assert (message.status, message.attempts, message.message_id) == ("pending", 1, None)
    assert message.last_error == 'HTTP 500: {"error": "upstream down"}'
    # the first retry waits between half of and the whole base delay (30 s): jitter, never at once
    assert before + timedelta(seconds=15) <= message.next_attempt_at <= timezone.now() + timedelta(seconds=30)

    # a run before the retry is due sends nothing
    outbound_send_due()
    assert len(webhook_receiver.received()) == 1

    # a run once it is due sends it again, with the same Idempotency-Key, and it is sent
    outbound_send_due(now=_later(31))

    message.refresh_from_db()
    assert webhook_receiver.keys() == [str(message.id), str(message.id)]
    assert (message.status, message.attempts, message.message_id, message.last_error) == ("sent", 2, "msg-2", None)
    assert _cached(message) == {"messageId": "msg-2", "sent_at": message.sent_at.isoformat()}


def test_429_is_retried_no_sooner_than_retry_after(configured_a, webhook_receiver):
    [message] = make_outbound_messages(1)
    webhook_receiver.script(Reply(status=429, body={"error": "slow down"}, headers={"Retry-After": "90"}))

    before = timezone.now()
    outbound_send_due()

    message.refresh_from_db()
    assert (message.status, message.attempts) == ("pending", 1)
    assert message.last_error == 'HTTP 429: {"error": "slow down"}'
    assert before + timedelta(seconds=90) <= message.next_attempt_at <= timezone.now() + timedelta(seconds=90)


def test_400_fails_with_the_error_recorded_and_is_not_retried(configured_a, webhook_receiver):
    [message] = make_outbound_messages(1)
    webhook_receiver.script(Reply(status=400, body={"error": "invalid number"}))

    summary = outbound_send_due()
    outbound_send_due(now=_later())

    message.refresh_from_db()
    assert summary.failed == [message.id]
    assert (message.status, message.attempts, message.message_id, message.sent_at) == ("failed", 1, None, None)
    assert message.last_error == 'HTTP 400: {"error": "invalid number"}'
    assert len(webhook_receiver.received()) == 1
    assert _cached(message) is None


def test_timeout_is_retried(configured_a, webhook_receiver, settings):
    settings.OUTBOUND_HTTP_TIMEOUT_SECONDS = 0.3
    [message] = make_outbound_messages(1)
    webhook_receiver.script(Reply(hang=True))

    outbound_send_due()

    message.refresh_from_db()
    assert (message.status, message.attempts, message.message_id) == ("pending", 1, None)
    assert message.last_error.startswith("ReadTimeout: ")

    outbound_send_due(now=_later(31))

    message.refresh_from_db()
    assert (message.status, message.attempts, message.message_id) == ("sent", 2, "msg-2")
    assert webhook_receiver.keys() == [str(message.id), str(message.id)]


def test_connection_refused_is_retried(configured_a, webhook_receiver):
    [message] = make_outbound_messages(1)
    scheduler_update(webhook_url="http://127.0.0.1:9/nothing-listens-here")

    outbound_send_due()

    message.refresh_from_db()
    assert (message.status, message.attempts) == ("pending", 1)
    assert message.last_error.startswith("ConnectionError: ")


def test_a_redirect_is_not_followed_and_fails(configured_a, webhook_receiver):
    # A redirected POST may turn into a GET or go to another host: a 3xx is a misconfiguration, not a delivery.
    [message] = make_outbound_messages(1)
    webhook_receiver.script(Reply(status=307, body={"moved": True}, headers={"Location": "/elsewhere"}))

    summary = outbound_send_due()

    message.refresh_from_db()
    assert summary.failed == [message.id]
    assert (message.status, message.attempts, message.last_error) == ("failed", 1, 'HTTP 307: {"moved": true}')
    assert [request.path for request in webhook_receiver.received()] == ["/hook"]


def test_an_auth_key_that_cannot_be_a_header_fails_without_a_request(configured_a, webhook_receiver):
    # A line break in a header value would split the request: http.client refuses it, and so do we, for good.
    # The API and the admin refuse such a key (test_apis.py); one stored before that rule is still never sent.
    [message] = make_outbound_messages(1)
    SchedulerSetting.objects.update(auth_key="secret\r\nX-Injected: 1")

    summary = outbound_send_due()

    message.refresh_from_db()
    assert summary.failed == [message.id]
    assert (message.status, message.attempts) == ("failed", 1)
    assert message.last_error.startswith("ValueError: Invalid header value")
    assert webhook_receiver.received() == []


def test_the_proxy_named_by_the_environment_carries_the_request(configured_a, webhook_receiver, monkeypatch):
    # given HTTP_PROXY pointing at the receiver, which thus plays the proxy of a provider's host
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", webhook_receiver.url.removesuffix("/hook"))
    scheduler_update(webhook_url="http://provider.invalid/hook")
    [message] = make_outbound_messages(1)

    # when a run goes
    summary = outbound_send_due()

    # then the proxy got the request in absolute form, for the provider's host, and the message is sent
    [received] = webhook_receiver.received()
    assert (received.path, received.headers["host"]) == ("http://provider.invalid/hook", "provider.invalid")
    assert received.headers["idempotency-key"] == str(message.id)
    assert summary.sent == [message.id]


@contextlib.contextmanager
def _https_receiver(tmp_path, *, name: str, alt_name: str):
    """The webhook receiver behind TLS on loopback, with a self-signed certificate (in `receiver.ca_file`)
    for `alt_name`, its URL naming `name`."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName={alt_name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    receiver = WebhookReceiver()
    server = _Server(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.url = f"https://{name}:{server.server_address[1]}/hook"
    receiver.ca_file = str(cert)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def https_receiver(tmp_path):
    with _https_receiver(tmp_path, name="127.0.0.1", alt_name="IP:127.0.0.1") as receiver:
        yield receiver


@pytest.fixture
def https_named_receiver(tmp_path):
    """A certificate for the name hook.example only."""
    with _https_receiver(tmp_path, name="hook.example", alt_name="DNS:hook.example") as receiver:
        yield receiver


def test_https_trusts_the_ca_bundle_of_the_environment_and_nothing_else(configured_a, https_receiver, monkeypatch):
    # given an HTTPS webhook whose certificate no default bundle trusts
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    scheduler_update(webhook_url=https_receiver.url)
    [message] = make_outbound_messages(1)

    # when a run goes: the certificate is refused, nothing is delivered, and the message is retried later
    outbound_send_due()
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("pending", 1)
    assert message.last_error.startswith("ConnectionError: ") and "CERTIFICATE_VERIFY_FAILED" in message.last_error
    assert https_receiver.received() == []

    # and once REQUESTS_CA_BUNDLE names the certificate, the retry is sent over TLS
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", https_receiver.ca_file)
    outbound_send_due(now=_later(31))
    message.refresh_from_db()
    assert (message.status, message.attempts, message.message_id) == ("sent", 2, "msg-1")
    assert https_receiver.keys() == [str(message.id)]


def test_https_to_a_checked_address_still_verifies_the_certificate_for_the_name(
    configured_a, https_named_receiver, monkeypatch, settings
):
    # given the SSRF guard on, hook.example resolving to the receiver (loopback taken for public here), and the
    # receiver's certificate trusted: the connection goes to the address it checked, by number
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE = False
    real_resolve = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *args, **kwargs: real_resolve("127.0.0.1" if host == "hook.example" else host, *args, **kwargs)
    )
    monkeypatch.setattr("core.outbound_urls._address_is_public", lambda address: str(address) == "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", https_named_receiver.ca_file)
    scheduler_update(webhook_url=https_named_receiver.url)
    [message] = make_outbound_messages(1)

    # when a run goes
    outbound_send_due()

    # then TLS named hook.example (SNI, and the certificate, which names nothing else, was accepted)
    message.refresh_from_db()
    assert (message.status, message.attempts, message.message_id) == ("sent", 1, "msg-1")
    [received] = https_named_receiver.received()
    assert received.headers["host"] == f"hook.example:{https_named_receiver.url.split(':')[2].split('/')[0]}"


def test_exhausted_attempts_mark_the_message_failed(configured_a, webhook_receiver, settings):
    settings.OUTBOUND_MAX_ATTEMPTS = 3
    [message] = make_outbound_messages(1)
    webhook_receiver.script(*[Reply(status=503, body={"n": n}) for n in range(3)])

    for hours in range(3):
        outbound_send_due(now=_later(3600 * (hours + 1) * 2))
    outbound_send_due(now=_later(3600 * 10))

    message.refresh_from_db()
    assert (message.status, message.attempts) == ("failed", 3)
    assert message.last_error == 'HTTP 503: {"n": 2} (gave up after 3 attempts)'
    assert len(webhook_receiver.received()) == 3


def test_a_2xx_without_message_id_fails_and_is_not_resent(configured_a, webhook_receiver):
    [message] = make_outbound_messages(1)
    webhook_receiver.script(Reply(status=200, body={"ok": True}))

    outbound_send_due()
    outbound_send_due(now=_later())

    message.refresh_from_db()
    assert (message.status, message.message_id) == ("failed", None)
    assert message.last_error == 'HTTP 200 without a messageId in a JSON body: {"ok": true}'
    assert len(webhook_receiver.received()) == 1


def test_odd_provider_answers_are_recorded_cleaned_and_nothing_is_posted_twice(configured_a, webhook_receiver):
    # given one wave of six messages whose answers PostgreSQL or the UTF-8 encoder cannot hold as they come
    # (a NUL, a lone surrogate), beside two healthy answers recorded in the same statement
    scheduler_update(batch_size=6)
    messages = make_outbound_messages(6)
    webhook_receiver.script(
        Reply(status=200, body={"messageId": "a\u0000b"}),
        Reply(status=200, body=b'{"messageId": "\\ud800x"}'),
        Reply(status=400, body=b"bad\x00request"),
        Reply(status=200, body=b"not json\x00 \xff"),
        Reply(status=202, body={"messageId": "healthy-1"}),
        Reply(status=202, body={"messageId": "healthy-2"}),
    )

    # when the run records them, and another comes after every lease would have ended
    outbound_send_due()
    outbound_send_due(now=_later())

    # then each message was POSTed exactly once, and each row holds its answer, cleaned
    keys = webhook_receiver.keys()  # in arrival order, which is the order the replies were given in
    assert sorted(keys) == sorted(str(message.id) for message in messages)
    rows = {str(row.id): row for row in OutboundMessage.objects.all()}
    recorded = [(rows[key].status, rows[key].message_id, rows[key].last_error, rows[key].claim_token) for key in keys]
    assert recorded == [
        ("sent", "a\ufffdb", None, None),
        ("sent", "\ufffdx", None, None),
        ("failed", None, "HTTP 400: bad\ufffdrequest", None),
        ("failed", None, "HTTP 200 without a messageId in a JSON body: not json\ufffd \ufffd", None),
        ("sent", "healthy-1", None, None),
        ("sent", "healthy-2", None, None),
    ]
    assert _cached(rows[keys[1]])["messageId"] == "\ufffdx"


def test_deeply_nested_2xx_json_fails_once_and_is_not_resent(configured_a, webhook_receiver):
    # given a 2xx whose body nests past the JSON decoder's recursion limit (RecursionError, not ValueError)
    [message] = make_outbound_messages(1)
    webhook_receiver.script(Reply(status=200, body=b"[" * 100_000))

    outbound_send_due()
    outbound_send_due(now=_later())

    message.refresh_from_db()
    assert (message.status, message.message_id) == ("failed", None)
    assert message.last_error == "HTTP 200 without a messageId in a JSON body: " + "[" * 300
    assert len(webhook_receiver.received()) == 1


def test_an_outcome_the_database_refuses_still_leaves_sending(configured_a, webhook_receiver, monkeypatch):
    # given outcomes that reach the statement uncleaned (a defect of ours) beside a healthy one
    import scheduler.services.run as services

    monkeypatch.setattr(services, "storable_text", lambda text, max_length=None: text)
    scheduler_update(batch_size=2)
    messages = make_outbound_messages(2)
    webhook_receiver.script(Reply(status=400, body=b"bad\x00request"), Reply(status=202, body={"messageId": "ok"}))

    outbound_send_due()
    outbound_send_due(now=_later())

    # then both are recorded (the refused one with its status alone) and neither is POSTed again
    keys = webhook_receiver.keys()
    assert sorted(keys) == sorted(str(message.id) for message in messages)
    rows = {str(row.id): row for row in OutboundMessage.objects.all()}
    assert [(rows[key].status, rows[key].message_id, rows[key].last_error) for key in keys] == [
        ("failed", None, "The delivery outcome could not be stored; see the worker log."),
        ("sent", "ok", None),
    ]


def test_a_message_left_sending_by_a_dead_run_is_recovered_after_its_lease(configured_a, webhook_receiver):
    # given a message a crashed run claimed and started to send (attempt counted, lease running)
    [stuck, waiting] = make_outbound_messages(2)
    OutboundMessage.objects.filter(id=stuck.id).update(
        status="sending", attempts=1, claim_token="00000000-0000-0000-0000-000000000001",
        lease_expires_at=timezone.now() + timedelta(seconds=120),
    )  # fmt: skip

    # when a run goes while the lease holds, the message is left alone
    outbound_send_due()
    assert webhook_receiver.keys() == [str(waiting.id)]

    # and once the lease expired, it is sent again with the same Idempotency-Key
    outbound_send_due(now=_later(121))

    stuck.refresh_from_db()
    assert webhook_receiver.keys() == [str(waiting.id), str(stuck.id)]
    assert (stuck.status, stuck.attempts, stuck.message_id, stuck.claim_token) == ("sent", 2, "msg-2", None)


def test_a_lost_claim_neither_sends_nor_records(configured_a, webhook_receiver):
    # A run that stalled past its lease: another run took the message over. Nothing of the first may land.
    from scheduler.services import outbound_claim_due

    [message] = make_outbound_messages(1)
    stale = outbound_claim_due(batch_size=1, claim_token="00000000-0000-0000-0000-00000000000a", now=timezone.now())
    assert [m.id for m in stale] == [message.id]
    OutboundMessage.objects.filter(id=message.id).update(claim_token="00000000-0000-0000-0000-00000000000b")

    from scheduler.services.run import _Outcome, _outcomes_record

    written = _outcomes_record(
        claim_token=stale[0].claim_token, results=[(message, _Outcome("sent", message_id="x"), 1)], now=timezone.now()
    )

    message.refresh_from_db()
    assert written == {}
    assert (message.status, message.message_id, message.attempts) == ("sending", None, 1)
    assert _cached(message) is None


def test_an_interrupted_run_hands_back_what_it_never_tried(configured_a, webhook_receiver, settings):
    # given a run sending one request at a time, stopped by its soft time limit (SIGUSR1, as Celery's pool
    # sends it) while the first of its three requests hangs
    from celery.exceptions import SoftTimeLimitExceeded

    settings.OUTBOUND_SEND_CONCURRENCY = 1
    scheduler_update(batch_size=3)
    first, second, third = make_outbound_messages(3)
    webhook_receiver.script(Reply(hang=True))

    def soft_time_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    def interrupt_once_the_request_hangs(main_thread: int):
        wait_for(lambda: len(webhook_receiver.received()) == 1, timeout=10, message="the first request")
        signal.pthread_kill(main_thread, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, soft_time_limit)
    try:
        threading.Thread(target=interrupt_once_the_request_hangs, args=(threading.get_ident(),), daemon=True).start()
        with pytest.raises(SoftTimeLimitExceeded):
            outbound_send_due()
    finally:
        signal.signal(signal.SIGUSR1, previous)

    # then the untried ones are due again at once; the one in flight keeps its lease (it may have arrived)
    for message in (first, second, third):
        message.refresh_from_db()
    assert (first.status, first.attempts) == ("sending", 1)
    assert first.lease_expires_at > timezone.now()
    for untried in (second, third):
        assert (untried.status, untried.attempts, untried.claim_token, untried.lease_expires_at) == ("pending", 0, None, None)
    assert webhook_receiver.keys() == [str(first.id)]


def test_a_failure_inside_a_sending_thread_is_retried_and_logged_under_the_tenant(configured_a, monkeypatch):
    # given a bug in the request code, which runs on the run's sending threads
    from django_tenants.log import TenantContextFilter

    from scheduler.services import run as services

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "_post", broken)
    [message] = make_outbound_messages(1)
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append((record.getMessage(), record.schema_name))

    handler = Collect()
    handler.addFilter(TenantContextFilter())  # what the console handler uses: the emitting thread's schema
    logging.getLogger("scheduler.services").addHandler(handler)
    try:
        summary = outbound_send_due()
    finally:
        logging.getLogger("scheduler.services").removeHandler(handler)

    # then the run does not hang: the message is back for a retry, and the log line names tenant A
    message.refresh_from_db()
    assert summary.retrying == [message.id]
    assert (message.status, message.attempts, message.last_error) == ("pending", 1, "RuntimeError: boom")
    assert (f"outbound {message.id}: sending failed unexpectedly", "alpha") in seen


def test_stopped_tenant_sends_nothing_while_another_keeps_sending(
    configured_a, tenant_b, webhook_receiver
):
    # given messages in both tenants, and A's job stopped
    a_messages = make_outbound_messages(2)
    scheduler_stop()
    with schema_context(tenant_b.schema_name):
        scheduler_update(webhook_url=webhook_receiver.url.replace("/hook", "/b"))
        b_messages = make_outbound_messages(2)

    # when both run
    a_summary = outbound_send_due()
    with schema_context(tenant_b.schema_name):
        outbound_send_due()

    # then only B sent
    assert a_summary.skipped == "stopped"
    assert sorted(webhook_receiver.keys()) == sorted(str(m.id) for m in b_messages)
    assert list(OutboundMessage.objects.values_list("status", flat=True)) == ["pending", "pending"]

    # and starting A again resumes it
    scheduler_start()
    outbound_send_due()
    assert sorted(webhook_receiver.keys("/hook")) == sorted(str(m.id) for m in a_messages)


def test_no_webhook_url_keeps_messages_pending(tenant_a, webhook_receiver):
    with schema_context(tenant_a.schema_name):
        scheduler_update(webhook_url="")
        [message] = make_outbound_messages(1)

        summary = outbound_send_due()

        message.refresh_from_db()
        assert summary.skipped == "no webhook_url"
        assert (message.status, message.attempts) == ("pending", 0)


def test_retry_delay_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.OUTBOUND_RETRY_BASE_SECONDS = 10
    settings.OUTBOUND_RETRY_MAX_SECONDS = 100

    for attempts, full in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)]:
        delays = {outbound_retry_delay(attempts=attempts) for _ in range(50)}
        assert all(full / 2 <= delay <= full for delay in delays)
        assert len(delays) > 1  # jittered
    assert outbound_retry_delay(attempts=1, retry_after=70) == 70
    assert outbound_retry_delay(attempts=1, retry_after=7000) == 100


def test_two_runs_started_at_the_same_moment_send_every_message_once(make_live_tenant, webhook_receiver):
    # given committed messages in a tenant whose batch is 3, and a slow receiver (runs overlap fully)
    tenant = make_live_tenant("twin")
    with schema_context(tenant.schema_name):
        scheduler_update(webhook_url=webhook_receiver.url, batch_size=3)
        messages = make_outbound_messages(7)
    barrier = threading.Barrier(2)
    summaries, errors = [], []

    def run():
        # each thread has its own database connection (Django's are per thread)
        try:
            with schema_context(tenant.schema_name):
                barrier.wait(5)
                summaries.append(outbound_send_due())
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    # when two runs start at the same moment, twice
    for _ in range(2):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    # then every message was sent exactly once, 3 + 3 by the first pair and the last one by the second
    assert errors == []
    keys = webhook_receiver.keys()
    assert sorted(keys) == sorted(str(m.id) for m in messages)
    assert len(keys) == len(set(keys)) == 7
    assert sorted(len(summary.sent) for summary in summaries) == [0, 1, 3, 3]
    with schema_context(tenant.schema_name):
        assert sorted(OutboundMessage.objects.values_list("status", "attempts")) == [("sent", 1)] * 7
        assert len(set(OutboundMessage.objects.values_list("message_id", flat=True))) == 7


def test_many_runs_in_parallel_send_every_message_exactly_once(make_live_tenant, webhook_receiver, settings):
    # given 150 committed messages, and six runs at once, each sending in waves of 4 parallel requests and
    # running again as long as it finds something due (as overlapping beat runs on several workers would)
    settings.OUTBOUND_SEND_CONCURRENCY = 4
    tenant = make_live_tenant("many")
    with schema_context(tenant.schema_name):
        scheduler_update(webhook_url=webhook_receiver.url, batch_size=9)
        messages = make_outbound_messages(150)
    barrier = threading.Barrier(6)
    sent, errors = [], []

    def runs():
        try:
            with schema_context(tenant.schema_name):
                barrier.wait(10)
                while True:
                    summary = outbound_send_due()
                    sent.extend(summary.sent)
                    if not (summary.sent or summary.retrying or summary.failed):
                        break
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=runs) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # then the receiver got each message exactly once, and each row and cache entry holds its own answer
    assert errors == []
    with schema_context(tenant.schema_name):
        assert list(OutboundMessage.objects.exclude(last_error=None).values_list("last_error", flat=True)) == []
    keys = webhook_receiver.keys()
    assert len(keys) == len(set(keys)) == 150
    assert set(keys) == {str(m.id) for m in messages}
    assert sorted(sent) == sorted(m.id for m in messages)
    answered = {request.headers["idempotency-key"]: f"msg-{number}" for number, request in enumerate(webhook_receiver.received(), 1)}
    with schema_context(tenant.schema_name):
        rows = list(OutboundMessage.objects.values_list("id", "status", "attempts", "message_id", "claim_token"))
        assert sorted((status, attempts, token) for _, status, attempts, _, token in rows) == [("sent", 1, None)] * 150
        assert {str(id): message_id for id, _, _, message_id, _ in rows} == answered
        assert all(_cached(OutboundMessage(id=id))["messageId"] == message_id for id, _, _, message_id, _ in rows)


def test_a_claim_skips_the_rows_another_claim_holds_instead_of_waiting(make_live_tenant):
    # given a committed backlog, and another transaction holding the two oldest rows (a claim in progress)
    from django.db import transaction

    from scheduler.services import outbound_claim_due

    tenant = make_live_tenant("skip")
    with schema_context(tenant.schema_name):
        messages = make_outbound_messages(4)
    holding, release = threading.Event(), threading.Event()

    def hold_the_oldest_two():
        try:
            with schema_context(tenant.schema_name), transaction.atomic():
                list(OutboundMessage.objects.select_for_update().filter(id__in=[messages[0].id, messages[1].id]))
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_oldest_two)
    holder.start()
    assert holding.wait(5)

    # when this run claims, it takes the next two at once (it would wait, then re-claim, without SKIP LOCKED)
    try:
        with schema_context(tenant.schema_name):
            started = timezone.now()
            claimed = outbound_claim_due(batch_size=2, claim_token="00000000-0000-0000-0000-0000000000c1", now=started)
            waited = timezone.now() - started
    finally:
        release.set()
        holder.join(10)

    assert [message.id for message in claimed] == [messages[2].id, messages[3].id]
    assert {message.status for message in claimed} == {"sending"}
    assert waited < timedelta(seconds=2)


def test_recording_outcomes_finds_each_message_by_its_outcome_not_by_the_runs_token(configured_a):
    # given statistics taken while no message was claimed (as autovacuum leaves them between runs: PostgreSQL then
    # expects one row with a run's token), then a run holding 300 claimed messages, 200 of them answered
    from scheduler.services.run import _outcome_rows_write, outbound_claim_due

    with schema_context(configured_a.schema_name):
        make_outbound_messages(1200)
        OutboundMessage.objects.filter(id__in=OutboundMessage.objects.order_by("created_at").values("id")[300:]).update(status="sent")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE scheduler_outboundmessage")
        claim_token = uuid.uuid4()
        now = timezone.now()
        claimed = outbound_claim_due(batch_size=300, claim_token=claim_token, now=now)
        rows = {message.id: ("sent", f"provider-{n}", None, "") for n, message in enumerate(claimed[:200])}
        # when the run records the answers (the plan as the planner makes it when it expects one row on a side)
        with nested_loop_plan_of("UPDATE scheduler_outboundmessage AS message") as nodes:
            written = _outcome_rows_write(claim_token=claim_token, rows=rows, now=now)

        # then each answer updated its message, and no claimed message was compared with every answer (the old
        # statement found the run's rows by its token and joined them to the answers by a filter)
        assert (len(claimed), len(written)) == (300, 200)
        assert OutboundMessage.objects.filter(claim_token=claim_token).count() == 100
    removed = sum(node.get("Rows Removed by Join Filter", 0) + node.get("Rows Removed by Filter", 0) for node in nodes)
    assert removed == 0, json.dumps(nodes, indent=1)
