"""Retention of the outbox (events.retention): expired events go with their deliveries and attempts, in
batches, due-driven per tenant; an event an unfinished delivery needs stays."""

import importlib
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django_tenants.utils import schema_context

from events.delivery import webhook_deliveries_send
from events.models import Delivery, DeliveryAttempt, Event
from events.retention import (
    RetentionSummary,
    events_retention_next_due_at,
    events_retention_run,
    events_retention_settle,
)
from events.services import event_record, webhook_delivery_redeliver, webhook_endpoint_create
from tenants.models import TenantWork
from tenants.work import tenant_work_version

KIND = TenantWork.Kind.EVENTS_RETENTION


def _mark(tenant) -> TenantWork | None:
    return TenantWork.objects.filter(tenant=tenant, kind=KIND).first()


def test_expired_events_go_with_their_finished_deliveries_and_attempts(tenant_a, event_receiver, settings):
    settings.EVENTS_SEND_CONCURRENCY = settings.EVENTS_ENDPOINT_CONCURRENCY = 1  # answers in event order
    settings.EVENTS_RETRY_SCHEDULE_SECONDS = [5]  # two attempts in all
    settings.EVENTS_RETENTION_BATCH = 2  # batches: the run goes on until none is left
    with schema_context(tenant_a.schema_name):
        # given events of no delivery (no endpoint yet), one of them written 20 days later than the rest
        event_record(type="chat.sla_breached", data={"n": "no delivery"})
        event_record(type="chat.sla_breached", data={"n": "young"})
        # and a succeeded, a dead and a redelivered (pending again) delivery
        webhook_endpoint_create(url=event_receiver.url, events=["*"])
        for n in ("succeeded", "dead", "redelivered"):
            event_record(type="chat.sla_breached", data={"n": n})
        event_receiver.script(200, 500, 500, 500, 500)
        webhook_deliveries_send()
        Delivery.objects.filter(status="failed").update(next_attempt_at=timezone.now())
        webhook_deliveries_send()
        redelivered = Delivery.objects.get(event__data__n="redelivered")
        webhook_delivery_redeliver(delivery_id=redelivered.id)
        now = timezone.now()
        young = Event.objects.get(data__n="young")
        Event.objects.filter(id=young.id).update(created_at=now + timedelta(days=20))
        assert sorted(Delivery.objects.values_list("status", flat=True)) == ["dead", "pending", "succeeded"]
        assert DeliveryAttempt.objects.count() == 5

        # when the clock is 31 days on
        later = now + timedelta(days=31)
        summary = events_retention_run(now=later)

        # then the expired events went with their finished deliveries and attempts, in batches of 2; the event
        # of the pending delivery stays with its attempts, and so does the younger event
        assert (summary.events, summary.deliveries, summary.finished) == (3, 2, True)
        assert sorted(Event.objects.values_list("data__n", flat=True)) == ["redelivered", "young"]
        assert list(Delivery.objects.values_list("id", flat=True)) == [redelivered.id]
        assert set(DeliveryAttempt.objects.values_list("delivery_id", flat=True)) == {redelivered.id}
        assert DeliveryAttempt.objects.count() == 2
        # and the next look is a day on (the held event), before the young one's expiry
        assert events_retention_next_due_at(now=later) == later + timedelta(days=1)
        assert events_retention_run(now=later).events == 0


def test_the_retention_mark_is_made_by_writes_moved_by_the_task_and_removed_when_no_event_is_left(tenant_a):
    with schema_context(tenant_a.schema_name):
        assert _mark(tenant_a) is None
        # given a first event: the tenant's retention work is marked, due when it expires
        before = timezone.now()
        event_record(type="chat.sla_breached", data={"n": 1})
        mark = _mark(tenant_a)
        assert before + timedelta(days=30) <= mark.due_at <= timezone.now() + timedelta(days=30)
        # a second event changes nothing (the mark exists)
        event_record(type="chat.sla_breached", data={"n": 2})
        assert (_mark(tenant_a).version, _mark(tenant_a).due_at) == (mark.version, mark.due_at)
        first, second = Event.objects.order_by("id")
        Event.objects.filter(id=second.id).update(created_at=first.created_at + timedelta(days=3))

        # when the task runs 31 days on: the first goes, the mark moves to the second's expiry
        later = first.created_at + timedelta(days=31)
        version = tenant_work_version(kind=KIND)
        events_retention_settle(version=version, summary=events_retention_run(now=later), now=later)
        assert list(Event.objects.values_list("id", flat=True)) == [second.id]
        assert _mark(tenant_a).due_at == first.created_at + timedelta(days=3 + 30)

        # and once no event is left, the mark goes: an idle tenant costs nothing
        even_later = later + timedelta(days=10)
        events_retention_settle(version=tenant_work_version(kind=KIND), summary=events_retention_run(now=even_later), now=even_later)
        assert Event.objects.count() == 0
        assert _mark(tenant_a) is None
        # and the next event marks again
        event_record(type="chat.sla_breached", data={"n": 3})
        assert _mark(tenant_a) is not None


def test_a_run_out_of_time_leaves_its_mark_due_at_once(tenant_a):
    with schema_context(tenant_a.schema_name):
        event_record(type="chat.sla_breached", data={"n": 1})
        later = timezone.now() + timedelta(days=31)
        events_retention_settle(
            version=tenant_work_version(kind=KIND), summary=RetentionSummary(events=1000, finished=False), now=later
        )
        assert _mark(tenant_a).due_at == later


def test_retention_below_two_days_is_refused(monkeypatch):
    import sociomile.settings.events as events_settings

    monkeypatch.setenv("EVENTS_RETENTION_DAYS", "1")
    with pytest.raises(ImproperlyConfigured, match="at least 2"):
        importlib.reload(events_settings)
    monkeypatch.setenv("EVENTS_RETENTION_DAYS", "2")
    assert importlib.reload(events_settings).EVENTS_RETENTION_DAYS == 2
    monkeypatch.delenv("EVENTS_RETENTION_DAYS")
    assert importlib.reload(events_settings).EVENTS_RETENTION_DAYS == 30
