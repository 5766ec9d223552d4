"""Business hours: when a team is open, when it next opens, and how far business time runs from a moment.

Pure functions on the stored shape (PRODUCT.md): `{"timezone": "Asia/Jakarta", "weekly": [{"day": 0, "open":
"09:00", "close": "17:00"}, ...], "holidays": ["2026-12-25", ...]}`. `day` is 0 = Monday to 6 = Sunday (as
Python's `weekday()`), times are the team's wall-clock times, `close` "24:00" is the end of that day, and a
holiday is a date in the team's time zone on which no window opens. No business hours (None): always open.

Windows are built per local date and converted to UTC before any arithmetic: aware datetimes in one zone
subtract as wall clock in Python, which would count a DST change's lost or repeated hour wrongly. A window's
open or close time that falls in a DST gap is read with the offset before the change (zoneinfo's fold=0).
"""

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# How far ahead windows are looked for: a team whose hours open nowhere within this (an empty week, or every
# day a holiday) never opens.
_HORIZON_DAYS = 800


def _clock(text: str) -> time | None:
    """"HH:MM" as a time; "24:00" as None (the end of the day)."""
    if text == "24:00":
        return None
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def business_windows(hours: dict, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The team's open windows as (open, close) in UTC, in order, from the one containing `start` (its open
    time cut to `start`) on, up to _HORIZON_DAYS ahead."""
    zone = ZoneInfo(hours["timezone"])
    weekly: dict[int, list[tuple[time, time | None]]] = defaultdict(list)
    for window in hours.get("weekly") or ():
        weekly[window["day"]].append((_clock(window["open"]), _clock(window["close"])))
    for windows in weekly.values():
        windows.sort(key=lambda pair: pair[0])
    holidays = {date.fromisoformat(day) for day in hours.get("holidays") or ()}
    day = start.astimezone(zone).date() - timedelta(days=1)  # a window of the day before may still be open
    for _ in range(_HORIZON_DAYS):
        if day not in holidays:
            for open_at, close_at in weekly.get(day.weekday(), ()):
                opens = datetime.combine(day, open_at, zone).astimezone(UTC)
                end = datetime.combine(day + timedelta(days=1), time(0), zone) if close_at is None else datetime.combine(day, close_at, zone)
                closes = end.astimezone(UTC)
                if closes > start:
                    yield max(opens, start), closes
        day += timedelta(days=1)


def hours_is_open(hours: dict | None, at: datetime) -> bool:
    """Whether the team is open at `at` (always, without business hours)."""
    if hours is None:
        return True
    return hours_next_open(hours, at) == at


def hours_next_open(hours: dict | None, at: datetime) -> datetime | None:
    """`at` itself if open then, else the next opening; None if it never opens within the horizon."""
    if hours is None:
        return at
    for opens, _ in business_windows(hours, at):
        return opens
    return None


def business_time_add(hours: dict | None, start: datetime, seconds: int) -> datetime | None:
    """The moment `seconds` of business time after `start` (calendar time without business hours); None if
    the hours never open enough within the horizon."""
    if hours is None:
        return start + timedelta(seconds=seconds)
    remaining = timedelta(seconds=seconds)
    for opens, closes in business_windows(hours, start):
        if remaining <= closes - opens:
            return opens + remaining
        remaining -= closes - opens
    return None
