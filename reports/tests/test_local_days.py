"""A range by day in a zone whose days are not UTC days (Kolkata +05:30, Kathmandu +05:45, New York across its
DST change) reads each day's stored figures (reports.models.LocalDay) while the sum of the day totals of the UTC
days it overlaps is the one they were stored with, and reads the coarse layer and the 15-minute edges for the
others: committed tenants, so that the summary runs in its own REPEATABLE READ transaction as the API's does."""

import threading
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from agents import services as agent_services
from conversations.models import Chat
from reports import selectors
from reports.models import LocalDay
from reports.selectors import ReportRange, report_summary
from reports.services import reports_backfill_start, reports_backfill_step, reports_rebuild
from reports.tests.timeline import play, recount, utc

SINCE, UNTIL = date(2026, 3, 1), date(2026, 3, 12)
ZONES = ("Asia/Kolkata", "Asia/Kathmandu", "America/New_York")


def _by_day(tz: str) -> dict:
    return {"report_range": ReportRange(since=SINCE, until=UNTIL, tz=ZoneInfo(tz)), "group_by": "day"}


def _day_start(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


@pytest.fixture
def played(make_live_tenant, clock, no_drain_task, settings):
    settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS = 1800
    tenant = make_live_tenant("reports")
    play(tenant=tenant, clock=clock, seed=23, chats=40, start=utc(2026, 3, 6, 12), span=timedelta(days=3), email_prefix="l")
    clock.at = utc(2026, 3, 12, 12)
    return tenant


def _stored(tz: str | None = None) -> dict:
    """{(local day, metric): (totals, count, median, p90)}; in `tz`, the rows of that zone's days only."""
    rows = {}
    for row in LocalDay.objects.all():
        day = row.since.astimezone(ZoneInfo(tz)).date() if tz else row.since
        if tz is None or _day_start(day, tz) == row.since and _day_start(day + timedelta(days=1), tz) == row.until:
            rows[(day, row.metric)] = (row.totals, row.count, row.median, row.p90)
    return rows


def _resolve_one_at(clock, at: datetime) -> None:
    """A write at `at`: a chat resolved then (its `resolved` count lands in the bucket of `at`)."""
    clock.at = at
    chat = Chat.objects.filter(resolved_at__isnull=True, assigned_agent__isnull=False).order_by("id").first()
    agent_services.chat_resolve(chat=chat)


def test_local_days_equal_the_recount_and_are_stored_with_their_utc_days_totals(played):
    tenant = played
    with schema_context(tenant.schema_name):
        for tz in ZONES:
            # when: the first summary reads every day from the coarse layer and the edges, and stores them
            first = report_summary(**_by_day(tz))

            expected = recount(tenant=tenant, since=SINCE, until=UNTIL, tz=tz, group_by="day")
            assert first == expected
            stored = _stored(tz)
            # every day with an event is stored, its figures those of the recount
            busy = {date.fromisoformat(row["key"]) for row in expected["data"] if row["chats_created"] or row["messages"]}
            assert busy and busy <= {day for day, _ in stored}
            for row in expected["data"]:
                day = date.fromisoformat(row["key"])
                if day in busy:
                    assert stored[(day, "created")][1] == row["chats_created"]
                    assert stored[(day, "messages")][1] == row["messages"]
                if (day, "wait") in stored:
                    assert stored[(day, "wait")][2:] == (row["wait_seconds"]["median"], row["wait_seconds"]["p90"])

            # then: the next summary reads the stored rows (a value planted in one shows) and is the same otherwise
            since = _day_start(date(2026, 3, 7), tz)
            LocalDay.objects.filter(since=since, metric="created").update(count=999_999)
            planted = report_summary(**_by_day(tz))
            assert planted["data"][6]["key"] == "2026-03-07"
            assert planted["data"][6]["chats_created"] == 999_999
            planted["data"][6]["chats_created"] = expected["data"][6]["chats_created"]
            assert planted == expected

        # New York's DST day (8 March, 23 hours) is stored with its own interval
        assert LocalDay.objects.filter(
            since=_day_start(date(2026, 3, 8), "America/New_York"), until=_day_start(date(2026, 3, 9), "America/New_York")
        ).exists()
        assert _day_start(date(2026, 3, 9), "America/New_York") - _day_start(date(2026, 3, 8), "America/New_York") == timedelta(hours=23)


@pytest.mark.parametrize(
    "tz, at",
    [
        # Kolkata's 7 March is [6 March 18:30, 7 March 18:30) UTC: a write in its earlier UTC day, then its later
        ("Asia/Kolkata", utc(2026, 3, 6, 20)),
        ("Asia/Kolkata", utc(2026, 3, 7, 10)),
        # New York's 7 March is [7 March 05:00, 8 March 05:00) UTC
        ("America/New_York", utc(2026, 3, 7, 12)),
        ("America/New_York", utc(2026, 3, 8, 3)),
    ],
)
def test_a_write_in_either_utc_day_of_a_stored_local_day_reads_it_again(played, clock, tz, at):
    tenant = played
    day = date(2026, 3, 7)
    assert at.astimezone(ZoneInfo(tz)).date() == day
    with schema_context(tenant.schema_name):
        report_summary(**_by_day(tz))
        before = _stored(tz)
        # a value planted in another metric of the day than the write's shows while the day is current ...
        LocalDay.objects.filter(since=_day_start(day, tz), metric="wait").update(median=999_999)
        assert report_summary(**_by_day(tz))["data"][6]["wait_seconds"]["median"] == 999_999

        # ... until a chat is resolved in one of its UTC days: the day is read again whole, and stored anew
        _resolve_one_at(clock, at)
        after = report_summary(**_by_day(tz))

        assert after == recount(tenant=tenant, since=SINCE, until=UNTIL, tz=tz, group_by="day")
        assert after["data"][6]["chats_resolved"] == before[(day, "resolved")][1] + 1
        stored = _stored(tz)
        assert stored[(day, "resolved")][:2] == (before[(day, "resolved")][0] + 1, before[(day, "resolved")][1] + 1)
        assert stored[(day, "wait")][2] == after["data"][6]["wait_seconds"]["median"] != 999_999


def test_a_rebuild_and_a_backfills_start_empty_the_local_days(played):
    tenant = played
    by_day = _by_day("Asia/Kolkata")
    with schema_context(tenant.schema_name):
        expected = report_summary(**by_day)
        assert _stored() != {}
        reports_rebuild()
        assert _stored() == {}
        report_summary(**by_day)
        assert _stored() != {}
        reports_backfill_start()
        assert _stored() == {}
        while not reports_backfill_step(batch_size=50).done:
            pass
        assert report_summary(**by_day) == expected == recount(
            tenant=tenant, since=SINCE, until=UNTIL, tz="Asia/Kolkata", group_by="day"
        )


def test_two_summaries_storing_the_same_local_days_at_once_both_answer_exactly(played, monkeypatch):
    tenant = played
    by_day = _by_day("Asia/Kolkata")
    expected = recount(tenant=tenant, since=SINCE, until=UNTIL, tz="Asia/Kolkata", group_by="day")
    # Both summaries have read every day from the coarse layer before either stores: their upserts meet on
    # the same rows (the later waits for the earlier's commit, then its REPEATABLE READ write fails).
    both_read = threading.Barrier(2)
    store = selectors._local_days_store

    def store_together(*args, **kwargs):
        both_read.wait(timeout=30)
        return store(*args, **kwargs)

    monkeypatch.setattr(selectors, "_local_days_store", store_together)
    answers, errors = [], []

    def summary() -> None:
        try:
            with schema_context(tenant.schema_name):
                answers.append(report_summary(**by_day))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=summary) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert answers == [expected, expected]
    monkeypatch.setattr(selectors, "_local_days_store", store)
    with schema_context(tenant.schema_name):
        stored = _stored()
        assert stored != {}
        # what was stored is what a summary reads back as current: the next one stores nothing new
        assert report_summary(**by_day) == expected
        assert _stored() == stored


def test_a_range_whose_days_are_utc_days_only_in_part_is_stored_as_local_days(played):
    # London is at offset 0 until 29 March 2026, then +01:00: its range by day is not all UTC days.
    tenant = played
    by_day = {"report_range": ReportRange(since=SINCE, until=date(2026, 4, 2), tz=ZoneInfo("Europe/London")), "group_by": "day"}
    expected = recount(tenant=tenant, since=SINCE, until=date(2026, 4, 2), tz="Europe/London", group_by="day")
    with schema_context(tenant.schema_name):
        assert report_summary(**by_day) == expected
        stored = _stored("Europe/London")
        assert {day for day, _ in stored} >= {date(2026, 3, 6), date(2026, 3, 7), date(2026, 3, 8)}
        assert all(_day_start(day, "Europe/London") == _day_start(day, "UTC") for day, _ in stored)
        LocalDay.objects.filter(since=_day_start(date(2026, 3, 7), "UTC"), metric="created").update(count=999_999)
        assert report_summary(**by_day)["data"][6]["chats_created"] == 999_999
