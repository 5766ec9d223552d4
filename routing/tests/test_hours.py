"""Business hours and business time, on a frozen clock (explicit instants): weekends, holidays, DST changes."""

from datetime import UTC, datetime, timedelta

from routing.hours import business_time_add, hours_is_open, hours_next_open

WEEKDAYS_9_TO_5 = [{"day": day, "open": "09:00", "close": "17:00"} for day in range(5)]
JAKARTA = {"timezone": "Asia/Jakarta", "weekly": WEEKDAYS_9_TO_5, "holidays": []}  # UTC+7, no DST
NEW_YORK = {"timezone": "America/New_York", "weekly": WEEKDAYS_9_TO_5, "holidays": []}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_business_time_skips_the_weekend():
    # Friday 2026-12-04 16:30 in Jakarta (09:30 UTC); one business hour: 30 min Friday, 30 min Monday
    friday = utc(2026, 12, 4, 9, 30)
    assert business_time_add(JAKARTA, friday, 3600) == utc(2026, 12, 7, 2, 30)  # Monday 09:30 local
    # arriving on Saturday, the clock starts on Monday at opening
    assert business_time_add(JAKARTA, utc(2026, 12, 5, 3, 0), 60) == utc(2026, 12, 7, 2, 1)
    # several days: 20 business hours from Monday 09:00 are Wednesday 13:00
    assert business_time_add(JAKARTA, utc(2026, 12, 7, 2, 0), 20 * 3600) == utc(2026, 12, 9, 6, 0)


def test_business_time_skips_holidays_in_the_teams_time_zone():
    hours = {**JAKARTA, "holidays": ["2026-12-07"]}  # that Monday
    assert business_time_add(hours, utc(2026, 12, 4, 9, 30), 3600) == utc(2026, 12, 8, 2, 30)  # Tuesday 09:30
    assert hours_next_open(hours, utc(2026, 12, 5, 3, 0)) == utc(2026, 12, 8, 2, 0)
    assert not hours_is_open(hours, utc(2026, 12, 7, 4, 0))  # Monday 11:00 local, a holiday


def test_business_time_across_the_spring_dst_change():
    # Friday 2027-03-12 16:30 EST (21:30 UTC); DST starts Sunday 14th: Monday 09:30 is EDT (UTC-4)
    assert business_time_add(NEW_YORK, utc(2027, 3, 12, 21, 30), 3600) == utc(2027, 3, 15, 13, 30)
    assert hours_next_open(NEW_YORK, utc(2027, 3, 13, 12, 0)) == utc(2027, 3, 15, 13, 0)


def test_business_time_across_the_autumn_dst_change():
    # Friday 2026-10-30 16:30 EDT (20:30 UTC); DST ends Sunday November 1st: Monday 09:30 is EST (UTC-5)
    assert business_time_add(NEW_YORK, utc(2026, 10, 30, 20, 30), 3600) == utc(2026, 11, 2, 14, 30)


def test_a_day_that_loses_an_hour_has_23_business_hours():
    # open all day, every day, in Berlin; 2027-03-28 lasts 23 hours (02:00 CET -> 03:00 CEST)
    hours = {"timezone": "Europe/Berlin", "weekly": [{"day": d, "open": "00:00", "close": "24:00"} for d in range(7)]}
    midnight = utc(2027, 3, 27, 23, 0)  # 2027-03-28 00:00 CET
    # always open is calendar time: 24 business hours are 24 real hours, across the change
    assert business_time_add(hours, midnight, 24 * 3600) == midnight + timedelta(hours=24)
    assert hours_is_open(hours, utc(2027, 3, 28, 1, 30))


def test_open_and_next_opening():
    assert hours_is_open(JAKARTA, utc(2026, 12, 7, 2, 0))  # Monday 09:00 local: open
    assert not hours_is_open(JAKARTA, utc(2026, 12, 7, 10, 0))  # Monday 17:00 local: closed
    assert hours_next_open(JAKARTA, utc(2026, 12, 7, 10, 0)) == utc(2026, 12, 8, 2, 0)
    assert hours_next_open({"timezone": "UTC", "weekly": []}, utc(2026, 12, 7)) is None
    assert business_time_add({"timezone": "UTC", "weekly": []}, utc(2026, 12, 7), 60) is None


def test_no_business_hours_is_always_open_and_calendar_time():
    at = utc(2026, 12, 5, 3, 0)
    assert hours_is_open(None, at) and hours_next_open(None, at) == at
    assert business_time_add(None, at, 90) == at + timedelta(seconds=90)
