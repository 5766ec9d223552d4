"""A range of UTC days reads each day's stored median and p90 (reports.models.DayPercentiles) while the day's
total (the hooks' DAY_TOTAL row) is the one they were stored with, and reads the coarse layer for the others:
committed tenants, so that the summary runs in its own REPEATABLE READ transaction as the API's does."""

import threading
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django_tenants.utils import schema_context

from agents import services as agent_services
from conversations.models import Chat
from reports.models import DayPercentiles
from reports.selectors import ReportRange, report_summary
from reports.services import reports_backfill_start, reports_backfill_step, reports_rebuild
from reports.tests.timeline import play, recount, utc

SINCE, UNTIL = date(2026, 3, 1), date(2026, 3, 12)
BY_UTC_DAY = {"report_range": ReportRange(since=SINCE, until=UNTIL, tz=ZoneInfo("UTC")), "group_by": "day"}


@pytest.fixture
def played(make_live_tenant, clock, no_drain_task, settings):
    settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS = 1800
    tenant = make_live_tenant("reports")
    play(tenant=tenant, clock=clock, seed=23, chats=40, start=utc(2026, 3, 6, 12), span=timedelta(days=3), email_prefix="d")
    clock.at = utc(2026, 3, 12, 12)
    return tenant


def _stored() -> dict:
    return {(row.day, row.metric): (row.total, row.median, row.p90) for row in DayPercentiles.objects.all()}


def _expected_medians(tenant) -> dict:
    expected = recount(tenant=tenant, since=SINCE, until=UNTIL, tz="UTC", group_by="day")
    return {
        (date.fromisoformat(row["key"]), metric): (row[f"{metric}_seconds"]["median"], row[f"{metric}_seconds"]["p90"])
        for row in expected["data"]
        for metric in ("first_response", "wait", "resolution")
        if row[f"{metric}_seconds"]["median"] is not None
    }


def test_days_are_stored_once_read_and_read_again_until_their_total_changes(played):
    tenant = played
    with schema_context(tenant.schema_name):
        # when: the first summary reads every day from the coarse layer and stores their medians
        first = report_summary(**BY_UTC_DAY)

        assert first == recount(tenant=tenant, since=SINCE, until=UNTIL, tz="UTC", group_by="day")
        stored = _stored()
        assert {key: value[1:] for key, value in stored.items()} == _expected_medians(tenant)
        assert {day for day, _ in stored} == {date(2026, 3, 6), date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)}

        # then: the next summary reads the stored rows (a value planted in one shows) ...
        DayPercentiles.objects.filter(day=date(2026, 3, 7), metric="wait").update(median=999_999)
        planted = report_summary(**BY_UTC_DAY)
        assert planted["data"][6]["key"] == "2026-03-07"
        assert planted["data"][6]["wait_seconds"]["median"] == 999_999

        # ... until a writer adds to that day: its total moves, the day is read again and stored anew
        chat = Chat.objects.filter(created_at__date=date(2026, 3, 7), resolved_at__isnull=True).order_by("id").first()
        agent_services.chat_resolve(chat=chat)
        after = report_summary(**BY_UTC_DAY)

        assert after == recount(tenant=tenant, since=SINCE, until=UNTIL, tz="UTC", group_by="day")
        assert after["data"][6]["wait_seconds"]["median"] != 999_999
        assert {key: value[1:] for key, value in _stored().items()} == _expected_medians(tenant)
        resolutions = _stored()[(date(2026, 3, 7), "resolution")][0]
        assert resolutions == stored[(date(2026, 3, 7), "resolution")][0] + 1

        # a summary inside a caller's transaction stores nothing (its snapshot may predate the lock)
        DayPercentiles.objects.all().delete()
        with transaction.atomic():
            assert report_summary(**BY_UTC_DAY) == after
        assert _stored() == {}

        # a rebuild and a backfill's start take totals down: both empty the table
        report_summary(**BY_UTC_DAY)
        assert _stored() != {}
        reports_rebuild()
        assert _stored() == {}
        report_summary(**BY_UTC_DAY)
        reports_backfill_start()
        assert _stored() == {}
        while not reports_backfill_step(batch_size=50).done:
            pass
        assert report_summary(**BY_UTC_DAY) == after


def test_a_summary_stores_nothing_while_a_rebuild_holds_or_awaits_the_table(played):
    tenant = played
    holding, release, errors = threading.Event(), threading.Event(), []

    def rebuild_like() -> None:
        # What reports_rebuild takes before it empties the table, held open.
        try:
            with schema_context(tenant.schema_name), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE reports_daypercentiles IN SHARE MODE")
                holding.set()
                release.wait(timeout=30)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=rebuild_like)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        with schema_context(tenant.schema_name):
            # the summary neither waits for the lock nor stores: its answer is exact all the same
            summary = report_summary(**BY_UTC_DAY)
            assert summary == recount(tenant=tenant, since=SINCE, until=UNTIL, tz="UTC", group_by="day")
    finally:
        release.set()
        thread.join(timeout=30)
    assert errors == []
    with schema_context(tenant.schema_name):
        assert _stored() == {}
        report_summary(**BY_UTC_DAY)
        assert set(_stored()) == set(_expected_medians(tenant))
