"""The reports' figures, read from the rollups (reports.models.Rollup). Definitions: docs/reports.md."""

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import connection

from conversations.models import Application
from reports.models import Backfill

GROUP_BY = ("day", "agent", "application")
DURATIONS = {"first_response": "first_response_seconds", "wait": "wait_seconds", "resolution": "resolution_seconds"}
COUNTS = {"created": "chats_created", "resolved": "chats_resolved", "messages": "messages"}
BUCKET_SECONDS = 15 * 60

# The range's histograms merged per group: (group, metric, seconds) -> count, in order. Medians and p90s are
# then read in Python (`_percentiles`): one aggregate and one sort here, rather than grouping sets and window
# functions, which cost several times more on the same rows. `metric` compared bytewise (COLLATE "C"): the
# database's linguistic collation made the sort the most expensive step.
_SUMMARY = """
SELECT {key} AS key, metric COLLATE "C" AS metric, seconds, sum(count)::bigint
FROM reports_rollup
WHERE bucket >= %(since)s AND bucket < %(until)s
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""


def _percentiles(histogram: list[tuple[int, int]]) -> tuple[int, int | None, int | None]:
    """(N, median, p90) of a histogram of (value, count) pairs sorted by value: nearest rank, the smallest
    value whose cumulative count reaches ceil(p * N), as PostgreSQL's percentile_disc(p) returns."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return 0, None, None
    ranks = [math.ceil(0.5 * total), math.ceil(0.9 * total)]
    found: list[int] = []
    cumulative = 0
    for value, count in histogram:
        cumulative += count
        while len(found) < len(ranks) and cumulative >= ranks[len(found)]:
            found.append(value)
        if len(found) == len(ranks):
            break
    return total, found[0], found[1]


_KEYS = {
    # The tz day a bucket falls in: its position among the days' starts (UTC instants computed in Python,
    # so PostgreSQL's own zone data is never asked, and a 23- or 25-hour DST day is just a longer interval).
    "day": "width_bucket(bucket, %(day_starts)s::timestamptz[])",
    "agent": "agent_id",
    "application": "application_id",
}


class RangeError(ValueError):
    """A range the rollups cannot answer exactly (or at all)."""


class ReportsPending(Exception):
    """The tenant's rollups do not cover all its chats yet (its backfill runs): no figure would be exact."""


def reports_backfill_done() -> bool:
    """Whether the current tenant's rollups hold every chat (reports.models.Backfill)."""
    state = Backfill.objects.filter(id=1).values_list("done", flat=True).first()
    return state is None or state


@dataclass(frozen=True)
class ReportRange:
    since: date  # first day, in `tz`
    until: date  # last day, included
    tz: ZoneInfo

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=offset) for offset in range((self.until - self.since).days + 1)]

    def day_starts(self) -> list[datetime]:
        """The UTC start of each day of the range, then the end of the last one."""
        ends = [*self.days, self.until + timedelta(days=1)]
        return [datetime.combine(day, time(0), tzinfo=self.tz).astimezone(UTC) for day in ends]


def report_range_check(report_range: ReportRange) -> list[datetime]:
    """The range's day boundaries in UTC; RangeError if one of them is not on a 15-minute bucket's edge
    (a zone whose offset on those dates is not a multiple of 15 minutes: only historical offsets are)."""
    starts = report_range.day_starts()
    for start in starts:
        if start.timestamp() % BUCKET_SECONDS:
            raise RangeError(f"{report_range.tz.key}'s offset on {start:%Y-%m-%d} is not a multiple of 15 minutes.")
    return starts


def _row(key, figures: dict) -> dict:
    row = {"key": key} if key is not _TOTAL else {}
    for metric, name in COUNTS.items():
        row[name] = figures.get(metric, (0, None, None))[0]
    for metric, name in DURATIONS.items():
        _, median, p90 = figures.get(metric, (0, None, None))
        row[name] = {"median": median, "p90": p90}
    # Counted by reports.services.report_sla_breached, which routing's SLA checks (issue 24) call.
    row["sla_breaches"] = figures.get("sla_breached", (0, None, None))[0]
    return row


_TOTAL = object()


def report_summary(*, report_range: ReportRange, group_by: str) -> dict:
    """`{"data": [rows], "totals": row}` for the range, grouped by tz day (every day of the range, in order),
    agent (its user id; None for no agent) or application (its token). Reads only the range's rollups.
    ReportsPending while the tenant's backfill runs."""
    starts = report_range_check(report_range)
    if not reports_backfill_done():
        raise ReportsPending
    histograms: dict = {}
    merged: dict = {}  # the totals' histograms: metric -> {seconds: count}
    with connection.cursor() as cursor:
        cursor.execute(
            _SUMMARY.format(key=_KEYS[group_by]),
            {"since": starts[0], "until": starts[-1], "day_starts": starts},
        )
        for key, metric, seconds, count in cursor.fetchall():
            histograms.setdefault((key, metric), []).append((seconds, count))
            into = merged.setdefault(metric, {})
            into[seconds] = into.get(seconds, 0) + count
    figures: dict = {}
    for (key, metric), histogram in histograms.items():
        figures.setdefault(key, {})[metric] = _percentiles(histogram)
    totals = _row(_TOTAL, {metric: _percentiles(sorted(counts.items())) for metric, counts in merged.items()})
    if group_by == "day":
        days = report_range.days
        data = [_row(day.isoformat(), figures.get(position, {})) for position, day in enumerate(days, start=1)]
    elif group_by == "agent":
        data = [_row(key or None, figures[key]) for key in sorted(figures)]
    else:
        tokens = dict(Application.objects.filter(id__in=list(figures)).values_list("id", "token"))
        data = [_row(tokens.get(key), figures[key]) for key in sorted(figures)]
    return {"data": data, "totals": totals}


DASHBOARD_DAYS = 14


def report_dashboard_get(*, today: date) -> dict:
    """What the tenant admin's index page charts: the last DASHBOARD_DAYS days to `today` (UTC days) by day
    and by agent, from the same summary as the API, plus the queue length and the online agents now; only
    the latter and `pending` while the tenant's backfill runs."""
    from agents.models import Agent
    from agents.selectors import queue_list

    now = {
        "queue_length": queue_list().count(),
        "online_agents": Agent.objects.filter(is_online=True, user__is_active=True).count(),
    }
    report_range = ReportRange(since=today - timedelta(days=DASHBOARD_DAYS - 1), until=today, tz=ZoneInfo("UTC"))
    try:
        by_day = report_summary(report_range=report_range, group_by="day")["data"]
        by_agent = report_summary(report_range=report_range, group_by="agent")["data"]
    except ReportsPending:
        return {"pending": True, **now}  # the page says so instead of charting partial figures
    emails = dict(Agent.objects.filter(pk__in=[row["key"] for row in by_agent if row["key"]]).values_list("pk", "user__email"))
    return {
        "days": [row["key"] for row in by_day],
        "created": [row["chats_created"] for row in by_day],
        "resolved": [row["chats_resolved"] for row in by_day],
        "first_response_median": [row["first_response_seconds"]["median"] for row in by_day],
        "wait_median": [row["wait_seconds"]["median"] for row in by_day],
        "agents": [emails.get(row["key"], f"agent {row['key']}") if row["key"] else "(no agent)" for row in by_agent],
        "agent_resolved": [row["chats_resolved"] for row in by_agent],
        "agent_messages": [row["messages"] for row in by_agent],
        "agent_first_response_median": [row["first_response_seconds"]["median"] for row in by_agent],
        **now,
    }
