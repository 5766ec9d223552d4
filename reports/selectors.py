"""The reports' figures, read from the rollups (reports.models.Rollup). Definitions: docs/reports.md."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import connection

from conversations.models import Application

GROUP_BY = ("day", "agent", "application")
DURATIONS = {"first_response": "first_response_seconds", "wait": "wait_seconds", "resolution": "resolution_seconds"}
COUNTS = {"created": "chats_created", "resolved": "chats_resolved", "messages": "messages"}
BUCKET_SECONDS = 15 * 60

# Exact medians and p90s of a range: the histograms of its buckets merged (per group, and for the totals),
# then, per histogram, the nearest-rank percentile: the smallest value whose cumulative count reaches
# ceil(p * N), which is what PostgreSQL's percentile_disc(p) returns for the same values. `metric` compared
# bytewise (COLLATE "C"): sorting the histogram rows by the database's linguistic collation cost more than
# the rest of the query.
_SUMMARY = """
WITH h AS (
    SELECT GROUPING(key) = 1 AS is_total, key, metric, seconds, sum(count) AS n
    FROM (
        SELECT {key} AS key, metric COLLATE "C" AS metric, seconds, count FROM reports_rollup
        WHERE bucket >= %(since)s AND bucket < %(until)s
    ) AS r
    GROUP BY GROUPING SETS ((key, metric, seconds), (metric, seconds))
), c AS (
    SELECT is_total, key, metric, seconds,
           sum(n) OVER (PARTITION BY is_total, key, metric ORDER BY seconds) AS cumulative,
           sum(n) OVER (PARTITION BY is_total, key, metric) AS total
    FROM h
)
SELECT is_total, key, metric, max(total)::bigint,
       min(seconds) FILTER (WHERE cumulative >= ceil(total * 0.5)),
       min(seconds) FILTER (WHERE cumulative >= ceil(total * 0.9))
FROM c GROUP BY is_total, key, metric
"""

_KEYS = {
    # The tz day a bucket falls in: its position among the days' starts (UTC instants computed in Python,
    # so PostgreSQL's own zone data is never asked, and a 23- or 25-hour DST day is just a longer interval).
    "day": "width_bucket(bucket, %(day_starts)s::timestamptz[])",
    "agent": "agent_id",
    "application": "application_id",
}


class RangeError(ValueError):
    """A range the rollups cannot answer exactly (or at all)."""


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
    # SLA policies (issue 24) have not landed: no chat can breach one yet.
    row["sla_breaches"] = 0
    return row


_TOTAL = object()


def report_summary(*, report_range: ReportRange, group_by: str) -> dict:
    """`{"data": [rows], "totals": row}` for the range, grouped by tz day (every day of the range, in order),
    agent (its user id; None for no agent) or application (its token). Reads only the range's rollups."""
    starts = report_range_check(report_range)
    figures: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(
            _SUMMARY.format(key=_KEYS[group_by]),
            {"since": starts[0], "until": starts[-1], "day_starts": starts},
        )
        for is_total, key, metric, total, median, p90 in cursor.fetchall():
            figures.setdefault(_TOTAL if is_total else key, {})[metric] = (total, median, p90)
    totals = _row(_TOTAL, figures.pop(_TOTAL, {}))
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
    and by agent, from the same summary as the API, plus the queue length and the online agents now."""
    from agents.models import Agent
    from agents.selectors import queue_list

    report_range = ReportRange(since=today - timedelta(days=DASHBOARD_DAYS - 1), until=today, tz=ZoneInfo("UTC"))
    by_day = report_summary(report_range=report_range, group_by="day")["data"]
    by_agent = report_summary(report_range=report_range, group_by="agent")["data"]
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
        "queue_length": queue_list().count(),
        "online_agents": Agent.objects.filter(is_online=True, user__is_active=True).count(),
    }
