"""The delivery engine against a real local HTTP receiver, real PostgreSQL and Redis."""

import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agents.services import agent_create, assignment_run, chat_assign, chat_resolve
from core.tests.support import PASSWORD, nested_loop_plan_of
from core.transport import HttpResult
from conversations.models import Chat, Ticket
from conversations.services import chat_create, message_create, ticket_create, ticket_status_set
from events.delivery import (
    DeliveryRunSummary,
    _outcomes_record,
    _Sent,
    webhook_deliveries_claim,
    webhook_deliveries_next_due_at,
    webhook_deliveries_send,
    webhook_envelope,
)
from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from events.services import (
    event_record,
    events_record,
    webhook_delivery_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
)
from scheduler.models import OutboundMessage
from scheduler.services.run import _outbound_events_record


def _make_due() -> None:
    """The clock moved past every retry's next attempt."""
    Delivery.objects.filter(status__in=["pending", "failed"]).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def _verified(endpoint_secret: str, request) -> dict:
    return Webhook(endpoint_secret).verify(request.body, request.headers)


def test_every_event_type_arrives_once_with_a_valid_signature(tenant_a, application_a, drained, event_receiver, tenant_a_admin):
    # given an endpoint for every type, and one of each type made through the product's services
    with schema_context(tenant_a.schema_name):
        endpoint = webhook_endpoint_create(url=event_receiver.url, events=["*"])
        first = agent_create(email="one@a.test", password=PASSWORD, name="One", role="agent", max_customers=2, is_online=True)
        second = agent_create(email="two@a.test", password=PASSWORD, name="Two", role="agent", max_customers=2, is_online=True)
        number = chat_create(application=application_a, customer_id="c")
        message_create(application=application_a, chat_number=number, body="Hello")
    drained(tenant_a)
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
        assignment_run()
        chat.refresh_from_db()
        chat_assign(chat=chat, agent=second if chat.assigned_agent_id == first.user_id else first)
        ticket = ticket_create(chat=chat, title="T", description="", priority="low", created_by=tenant_a_admin)
        ticket_status_set(ticket=Ticket.objects.get(id=ticket.id), status="closed")
        chat_resolve(chat=chat)
        sent = OutboundMessage.objects.create(to="+6281200000001", content="x", status="sent", message_id="m")
        failed = OutboundMessage.objects.create(to="+6281200000002", content="y", status="failed", last_error="e")
        _outbound_events_record(messages=[sent, failed])

        # when the tenant's delivery run goes
        summary = webhook_deliveries_send()

        # then every event arrived exactly once, signed, with its envelope as the body
        events = {event.webhook_id: event for event in Event.objects.all()}
        received = event_receiver.received()
        assert sorted(request.headers["webhook-id"] for request in received) == sorted(events)
        for request in received:
            envelope = _verified(endpoint.secret, request)
            event = events[request.headers["webhook-id"]]
            assert envelope == json.loads(webhook_envelope(event))
            assert envelope["id"] == event.webhook_id and envelope["type"] == event.type
            assert request.headers["content-type"] == "application/json"
        assert sorted(event.type for event in events.values()) == sorted([
            "chat.created", "message.created", "chat.assigned", "chat.transferred", "ticket.created",
            "ticket.updated", "chat.resolved", "outbound.sent", "outbound.failed",
        ])  # fmt: skip
        assert summary.succeeded == len(events) == 9
        assert set(Delivery.objects.values_list("status", "attempts")) == {("succeeded", 1)}
        # and the chat's events arrived in the order they happened
        chat_events = [events[r.headers["webhook-id"]] for r in received if events[r.headers["webhook-id"]].chat_id == chat.id]
        assert [event.id for event in chat_events] == sorted(event.id for event in chat_events)


def test_503_503_200_is_three_attempts_with_one_webhook_id(tenant_a, event_receiver):
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"number": 1})
        event_receiver.script(503, 503, 200)

        before = timezone.now()
        webhook_deliveries_send()
        delivery = Delivery.objects.get()
        # the first retry about 5 s later (jitter: 0.8x to 1.2x)
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, 503)
        assert before + timedelta(seconds=4) <= delivery.next_attempt_at <= timezone.now() + timedelta(seconds=6)
        assert webhook_deliveries_send().claimed == 0  # not due yet: nothing sent

        _make_due()
        webhook_deliveries_send()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("failed", 2)
        assert delivery.next_attempt_at >= timezone.now() + timedelta(seconds=47)  # about 1 min

        _make_due()
        webhook_deliveries_send()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == ("succeeded", 3, 200, None)
        assert delivery.delivered_at is not None
        assert [a.status_code for a in DeliveryAttempt.objects.filter(delivery=delivery)] == [503, 503, 200]
        ids = {request.headers["webhook-id"] for request in event_receiver.received()}
        assert (len(event_receiver.received()), ids) == (3, {delivery.event.webhook_id})
        assert webhook_deliveries_next_due_at() is None


def test_a_chats_later_event_waits_while_an_earlier_one_is_retried(tenant_a, event_receiver, settings):
    # one request at a time, in claim (event) order, so that the scripted 503 answers event 1 and not whichever
    # of two parallel requests arrived first; a window of 2, so the run claims again and again while it sends
    settings.EVENTS_SEND_CONCURRENCY = settings.EVENTS_ENDPOINT_CONCURRENCY = 1
    settings.EVENTS_ENDPOINT_WINDOW = 2
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.assigned", data={"n": 1}, chat_id=101)
        event_record(type="chat.resolved", data={"n": 2}, chat_id=101)
        event_record(type="chat.assigned", data={"n": 3}, chat_id=101)
        event_record(type="chat.assigned", data={"n": 4}, chat_id=202)  # another chat: never held back
        event_record(type="chat.assigned", data={"n": 5}, chat_id=202)
        event_record(type="chat.resolved", data={"n": 6}, chat_id=202)
        event_receiver.script(503)

        summary = webhook_deliveries_send()
        # only the first event of chat 101 (failed) and chat 202's, each claimed once its earlier one was
        # answered; 101's later ones wait
        assert [json.loads(r.body)["data"]["n"] for r in event_receiver.received()] == [1, 4, 5, 6]
        assert (summary.claimed, summary.succeeded, summary.retrying) == (4, 3, 1)
        webhook_deliveries_send()
        assert len(event_receiver.received()) == 4  # still waiting: the retry is not due

        _make_due()
        webhook_deliveries_send()
        assert [json.loads(r.body)["data"]["n"] for r in event_receiver.received()] == [1, 4, 5, 6, 1, 2, 3]
        assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_dead_delivery_releases_the_chats_next_event(tenant_a, event_receiver, settings):
    settings.EVENTS_RETRY_SCHEDULE_SECONDS = [5]  # two attempts in all
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.assigned", data={"n": 1}, chat_id=7)
        event_record(type="chat.resolved", data={"n": 2}, chat_id=7)
        event_receiver.script(500, 500)

        webhook_deliveries_send()
        _make_due()
        webhook_deliveries_send()

        first, second = Delivery.objects.order_by("event_id")
        assert (first.status, first.attempts, first.last_error) == ("dead", 2, "HTTP 500: ok (gave up after 2 attempts)")
        assert (second.status, second.attempts) == ("succeeded", 1)
        assert [json.loads(r.body)["data"]["n"] for r in event_receiver.received()] == [1, 1, 2]


def test_rotation_signs_with_both_secrets_for_24_hours_then_only_the_new_one(tenant_a, event_receiver):
    with schema_context(tenant_a.schema_name):
        endpoint = webhook_endpoint_create(url=event_receiver.url, events=["*"])
        old = endpoint.secret
        new = webhook_endpoint_rotate_secret(endpoint_id=endpoint.id)
        assert new != old and new.startswith("whsec_")
        endpoint.refresh_from_db()
        assert timedelta(hours=23, minutes=59) < endpoint.previous_secret_expires_at - timezone.now() <= timedelta(hours=24)

        event_record(type="chat.sla_breached", data={"n": 1})
        webhook_deliveries_send()
        [during] = event_receiver.received()
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert _verified(old, during)["data"] == {"n": 1}
        assert _verified(new, during)["data"] == {"n": 1}

        # when the 24 h have passed (the overlap's end moved into the past)
        WebhookEndpoint.objects.filter(id=endpoint.id).update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
        event_record(type="chat.sla_breached", data={"n": 2})
        webhook_deliveries_send()
        after = event_receiver.received()[1]
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        assert _verified(new, after)["data"] == {"n": 2}
        with pytest.raises(WebhookVerificationError):
            _verified(old, after)


def test_a_url_that_resolves_to_a_private_address_at_send_time_is_refused(tenant_a, event_receiver, settings):
    # given an endpoint accepted earlier, whose host is now a private address (guard on, as in production)
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE = False
        event_record(type="chat.sla_breached", data={"n": 1})

        webhook_deliveries_send()

        delivery = Delivery.objects.get()
        assert delivery.status == "dead"
        assert delivery.last_error.startswith("Not sent: The host \"127.0.0.1\" resolves to a loopback, private")
        assert event_receiver.received() == []


def test_an_endpoint_failing_for_24_hours_is_deactivated(tenant_a, event_receiver):
    with schema_context(tenant_a.schema_name):
        endpoint = webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})
        event_receiver.default_status = 500

        webhook_deliveries_send()
        endpoint.refresh_from_db()
        assert endpoint.is_active and endpoint.failing_since is not None

        # a success clears the record
        event_receiver.default_status = 200
        _make_due()
        webhook_deliveries_send()
        endpoint.refresh_from_db()
        assert endpoint.failing_since is None

        # only failures since 24 h: deactivated, and its deliveries wait (no run picks them up)
        event_receiver.default_status = 500
        WebhookEndpoint.objects.filter(id=endpoint.id).update(failing_since=timezone.now() - timedelta(hours=24, seconds=1))
        event_record(type="chat.sla_breached", data={"n": 2})
        summary = webhook_deliveries_send()
        endpoint.refresh_from_db()
        assert (endpoint.is_active, summary.deactivated) == (False, [endpoint.id])
        assert endpoint.deactivated_at is not None
        _make_due()
        assert webhook_deliveries_send().claimed == 0
        assert webhook_deliveries_next_due_at() is None


def test_redeliver_sends_the_same_webhook_id_again(tenant_a, event_receiver):
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})
        webhook_deliveries_send()
        delivery = Delivery.objects.get()

        webhook_delivery_redeliver(delivery_id=delivery.id)
        webhook_deliveries_send()

        delivery.refresh_from_db()
        first, second = event_receiver.received()
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.event.webhook_id
        assert first.body == second.body
        assert (delivery.status, delivery.attempts) == ("succeeded", 1)


def test_tenant_a_endpoint_never_receives_tenant_b_events(tenant_a, tenant_b, event_receiver):
    for tenant in (tenant_a, tenant_b):
        with schema_context(tenant.schema_name):
            webhook_endpoint_create(url=f"{event_receiver.url}/{tenant.schema_name}", events=["*"])
            event_record(type="chat.sla_breached", data={"tenant": tenant.schema_name})
    for tenant in (tenant_a, tenant_b):
        with schema_context(tenant.schema_name):
            webhook_deliveries_send()

    by_path = {(r.path, json.loads(r.body)["data"]["tenant"]) for r in event_receiver.received()}
    assert by_path == {
        (f"/events/{tenant_a.schema_name}", tenant_a.schema_name),
        (f"/events/{tenant_b.schema_name}", tenant_b.schema_name),
    }
    assert len(event_receiver.received()) == 2


def test_a_timeout_is_retried(tenant_a, event_receiver, settings):
    settings.EVENTS_HTTP_TIMEOUT_SECONDS = 1
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})
        event_receiver.script(None)  # hangs

        webhook_deliveries_send()

        delivery = Delivery.objects.get()
        assert (delivery.status, delivery.last_status_code) == ("failed", None)
        assert delivery.last_error.startswith("ReadTimeout")
        assert DeliveryAttempt.objects.get().error.startswith("ReadTimeout")


def test_a_timing_out_endpoint_does_not_hold_back_a_fast_ones_deliveries(
    tenant_a, event_receiver, second_event_receiver, settings
):
    # given a run of 4 threads, 2 per endpoint, and two endpoints of every event: the slow one (its deliveries
    # come first in event order) holds every request open, the fast one answers at once
    settings.EVENTS_SEND_CONCURRENCY, settings.EVENTS_ENDPOINT_CONCURRENCY, settings.EVENTS_ENDPOINT_WINDOW = 4, 2, 4
    settings.EVENTS_HTTP_TIMEOUT_SECONDS = 30
    slow, fast = event_receiver, second_event_receiver
    slow.default_status = None
    seen_while_slow_hangs = []

    def release_slow_once_fast_has_all() -> None:
        deadline = time.monotonic() + 20
        while len(fast.received()) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        seen_while_slow_hangs.append((len(fast.received()), len(slow.received())))
        slow.released.set()

    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=slow.url, events=["*"])
        fast_endpoint = webhook_endpoint_create(url=fast.url, events=["*"])
        for n in range(10):
            event_record(type="chat.sla_breached", data={"n": n})
        watcher = threading.Thread(target=release_slow_once_fast_has_all)
        watcher.start()

        # when the tenant's run goes
        webhook_deliveries_send()
        watcher.join()

        # then the fast endpoint got all ten while the slow one held just its two requests
        assert seen_while_slow_hangs == [(10, 2)]
        assert sorted(json.loads(r.body)["data"]["n"] for r in fast.received()) == list(range(10))
        assert Delivery.objects.filter(endpoint=fast_endpoint, status="succeeded").count() == 10


def test_a_run_past_its_time_hands_back_what_it_had_not_started(tenant_a, event_receiver, settings):
    # given an endpoint that never answers (1 s timeout), 2 requests at a time, and ten deliveries
    settings.EVENTS_SEND_CONCURRENCY, settings.EVENTS_ENDPOINT_CONCURRENCY = 4, 2
    settings.EVENTS_HTTP_TIMEOUT_SECONDS = 1
    event_receiver.default_status = None
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        for n in range(10):
            event_record(type="chat.sla_breached", data={"n": n})

        # when the run's time is up while its first two requests hang
        summary = webhook_deliveries_send(max_seconds=0.3)

        # then it started nothing more: the two timed out (a retry later), the eight others are due again now,
        # unclaimed and with no attempt counted
        assert len(event_receiver.received()) == 2
        assert (summary.claimed, summary.released, summary.retrying) == (10, 8, 2)
        tried = Delivery.objects.filter(status="failed")
        assert [(d.attempts, d.claim_token, d.last_error.split(":")[0]) for d in tried] == [(1, None, "ReadTimeout")] * 2
        untried = Delivery.objects.filter(status="pending")
        assert {(d.attempts, d.claim_token, d.lease_expires_at) for d in untried} == {(0, None, None)}
        assert untried.count() == 8
        assert webhook_deliveries_next_due_at() <= timezone.now()


def test_a_run_that_ends_with_deliveries_due_sends_the_next_run_at_once(tenant_a, event_receiver, settings, monkeypatch):
    # given deliveries due, and a run whose time is up before it claims anything
    from events import services as event_services
    from events.tasks import webhook_deliveries_send_task

    sent = []
    monkeypatch.setattr(event_services, "_deliveries_task_send", lambda schema_name: sent.append(schema_name))
    settings.EVENTS_RUN_MAX_SECONDS = 0
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        event_record(type="chat.sla_breached", data={"n": 1})
        sent.clear()  # the on-commit run of the event itself (none here: the test's transaction never commits)

        # when the task runs and ends
        webhook_deliveries_send_task()

        # then it handed over to the next run itself, not to the dispatcher's safety net
        assert sent == [tenant_a.schema_name]
        assert Delivery.objects.get().status == "pending"

        # and a run that leaves nothing due sends none
        settings.EVENTS_RUN_MAX_SECONDS = 20
        sent.clear()
        webhook_deliveries_send_task()
        assert (sent, Delivery.objects.get().status) == ([], "succeeded")


def test_recording_outcomes_finds_each_delivery_by_its_answer_not_by_the_runs_token(tenant_a):
    # given statistics taken while no delivery was claimed (as autovacuum leaves them between runs: PostgreSQL
    # then expects one row with a run's token), then a run holding 300 claimed deliveries, 200 of them answered
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url="https://hooks.example.com/in", events=["*"])
        events_record(events=[("chat.sla_breached", {"n": n}, None, None, False) for n in range(1200)])
        Delivery.objects.filter(id__in=Delivery.objects.order_by("event_id").values("id")[300:]).update(status="succeeded")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE events_delivery")
        claim_token = uuid.uuid4()
        claimed = webhook_deliveries_claim(claim_token=claim_token, now=timezone.now(), limit=300)
        endpoints = {endpoint.id: endpoint for endpoint in WebhookEndpoint.objects.all()}
        answered_at = timezone.now()
        answers = [(delivery, _Sent(result=HttpResult(status=200), attempted_at=answered_at, duration_ms=5)) for delivery in claimed[:200]]
        # when the run records the answers (the plan as the planner makes it when it expects one row on a side:
        # the bench's plan; on this small table it may pick a hash join instead, by a hair)
        summary = DeliveryRunSummary()
        with nested_loop_plan_of("INSERT INTO events_deliveryattempt") as nodes:
            _outcomes_record(claim_token=claim_token, results=answers, summary=summary, endpoints=endpoints)

        # then each answer updated its delivery, and no claimed delivery was compared with every answer (the old
        # statement found the run's rows by its token and joined them to the answers by a filter: 300 x 200
        # comparisons, most of a run's database time in the bench)
        assert (len(claimed), summary.succeeded) == (300, 200)
        assert Delivery.objects.filter(claim_token=claim_token).count() == 100
        removed = sum(node.get("Rows Removed by Join Filter", 0) for node in nodes)
        assert removed == 0, json.dumps(nodes, indent=1)


def test_a_run_renews_the_leases_of_what_it_holds_by_their_ids(tenant_a, event_receiver, settings):
    # given a lease of 0.4 s (renewed every 0.1 s), one request at a time, a first request that hangs until its
    # 1 s timeout, and four deliveries of which another run holds the oldest
    settings.EVENTS_LEASE_SECONDS = 0.4
    settings.EVENTS_ENDPOINT_CONCURRENCY = 1
    settings.EVENTS_HTTP_TIMEOUT_SECONDS = 1
    event_receiver.script(None)
    with schema_context(tenant_a.schema_name):
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        events_record(events=[("chat.sla_breached", {"n": n}, None, None, False) for n in range(4)])
        other_run = uuid.uuid4()
        [others] = webhook_deliveries_claim(claim_token=other_run, now=timezone.now(), limit=1)
        others_lease = timezone.now() + timedelta(hours=1)  # that run renews it
        Delivery.objects.filter(id=others.id).update(lease_expires_at=others_lease)
        renewals, plans = [], []

        def watch_renewals(execute, sql, params, many, context):
            if sql.lstrip().startswith("UPDATE events_delivery SET lease_expires_at"):
                raw = context["cursor"].cursor
                raw.execute("SAVEPOINT plan")
                raw.execute("SET LOCAL enable_seqscan = off")  # what an index can serve, on this small table
                raw.execute(f"EXPLAIN {sql}", params)
                plans.append("\n".join(row[0] for row in raw.fetchall()))
                raw.execute("ROLLBACK TO SAVEPOINT plan")
                result = execute(sql, params, many, context)
                renewals.append({d.id: d.lease_expires_at for d in Delivery.objects.filter(claim_token__isnull=False)})
                return result
            return execute(sql, params, many, context)

        # when a run sends the other three
        with connection.execute_wrapper(watch_renewals):
            summary = webhook_deliveries_send()

        # then while its first request hung, it kept the leases of all three ahead (past a lease's length), left
        # the other run's alone, and found its rows by their ids, not by a scan for its token
        assert (summary.claimed, summary.succeeded, summary.retrying) == (3, 2, 1)
        assert len(renewals) >= 5
        ours = set(Delivery.objects.exclude(id=others.id).values_list("id", flat=True))
        assert set(renewals[4]) == ours | {others.id}
        assert all(renewals[4][id] > renewals[0][id] for id in ours)
        assert Delivery.objects.get(id=others.id).lease_expires_at == others_lease
        assert all("Seq Scan" not in plan and "events_delivery_pkey" in plan for plan in plans), plans[0]
