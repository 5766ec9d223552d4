"""The reports' figures, read from the rollups (reports.models.Rollup). Definitions: docs/reports.md."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from conversations.models import Application
from reports.models import Backfill
from reports.services import BIN_SQL, DAY_TOTAL

GROUP_BY = ("day", "agent", "application")
DURATIONS = {"first_response": "first_response_seconds", "wait": "wait_seconds", "resolution": "resolution_seconds"}
COUNTS = {"created": "chats_created", "resolved": "chats_resolved", "messages": "messages"}
BUCKET_SECONDS = 15 * 60


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
    agent (its user id; None for no agent) or application (its token). Reads the coarse rollups of the range
    in two phases (_figures), and by day the days' stored figures where current (_utc_days, _local_days), in
    one snapshot. ReportsPending while the tenant's backfill runs."""
    starts = report_range_check(report_range)
    intervals: list[tuple[int | None, str, datetime, datetime]] = [(_TOTAL_GROUP, "n", starts[0], starts[-1])]
    # Days that are UTC days (UTC, or any zone at offset 0 on every day of the range): their medians and p90s
    # can be the stored ones (reports.models.DayPercentiles); other zones' days: reports.models.LocalDay.
    utc_days = group_by == "day" and all((start.hour, start.minute) == (0, 0) for start in starts)
    # A caller's own transaction (a test's) keeps its isolation; then nothing is stored (its snapshot may
    # predate the lock below).
    own_transaction = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if own_transaction:
            # One snapshot for every statement below: a writer committing between the bins' read and the
            # seconds' would otherwise give a median of neither state, and a stored one must be of the total
            # it is stored with.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # The plans' estimates pass JIT's threshold, and compiling took longer than these reads (~60 ms).
        cursor.execute("SET LOCAL jit = off")
        stored: dict = {}
        storable = group_by == "day" and own_transaction and _stored_days_lock(cursor)
        # In the snapshot the figures are read in: a backfill's start committed after it is not half seen.
        if not reports_backfill_done():
            raise ReportsPending
        if utc_days:
            stored, stale = _utc_days(cursor, starts)
        elif group_by == "day":
            stored, stale, day_totals = _local_days(cursor, starts)
        if group_by == "day":
            intervals += [(position, "n", starts[position - 1], starts[position]) for position in stale]
        else:
            intervals.append((None, "g" if group_by == "agent" else "a", starts[0], starts[-1]))
        figures = _figures(cursor, intervals)
        if group_by == "day":
            if storable:
                read = {position: figures.get(position, {}) for position in stale}
                if utc_days:
                    _day_percentiles_store(cursor, starts, read)
                else:
                    _local_days_store(cursor, starts, read, day_totals)
            for position, by_metric in stored.items():
                figures.setdefault(position, {}).update(by_metric)
    totals = _row(_TOTAL, figures.pop(_TOTAL_GROUP, {}))
    if group_by == "day":
        days = report_range.days
        data = [_row(day.isoformat(), figures.get(position, {})) for position, day in enumerate(days, start=1)]
    elif group_by == "agent":
        data = [_row(key or None, figures[key]) for key in sorted(figures)]
    else:
        tokens = dict(Application.objects.filter(id__in=list(figures)).values_list("id", "token"))
        data = [_row(tokens.get(key), figures[key]) for key in sorted(figures)]
    return {"data": data, "totals": totals}


# --- a range of UTC days: the stored medians and p90s (reports.models.DayPercentiles) ---------------------------

# Every chat's day total of each metric over a range of UTC days: a count's bin 0, a duration's DAY_TOTAL row.
_DAY_TOTALS = f"""
SELECT t.period, t.metric, t.count FROM reports_rollupperiod AS t
WHERE t.dimension = 'n' AND t.metric = ANY(%(metrics)s) AND t.span = 'd' AND t.bin = 0
  AND t.period >= %(since)s AND t.period <= %(until)s AND t.key = 0
  AND t.seconds = CASE WHEN t.metric = ANY(%(durations)s) THEN {DAY_TOTAL} ELSE -1 END
"""

_UTC_DAYS = f"""
SELECT t.period, t.metric, t.count, d.total, d.median, d.p90
FROM ({_DAY_TOTALS}) AS t LEFT JOIN reports_daypercentiles AS d ON d.day = t.period AND d.metric = t.metric
"""


def _day_totals_params(since: date, until: date) -> dict:
    return {"metrics": [*COUNTS, "sla_breached", *DURATIONS], "durations": list(DURATIONS), "since": since, "until": until}


def _stored_days_lock(cursor) -> bool:
    """Whether this summary may store the days' figures it computes: it holds reports_daypercentiles and
    reports_localday in ROW EXCLUSIVE mode, taken before its snapshot, so a rebuild or a backfill's start (which
    empty them, in SHARE mode) either committed before the snapshot or waits for this transaction and then
    deletes what it stored. Never waits: while one of those holds or awaits the lock, the summary reads without
    storing."""
    try:
        with transaction.atomic():
            cursor.execute("LOCK TABLE reports_daypercentiles, reports_localday IN ROW EXCLUSIVE MODE NOWAIT")
    except OperationalError:
        return False
    return True


def _utc_days(cursor, starts: list[datetime]) -> tuple[dict, list[int]]:
    """For a range of UTC days: {day's position: {metric: (N, median, p90)}} for every count and every duration
    whose stored median and p90 are of the day's current total, and the positions of days with a duration
    whose are not (or none): those are read from the coarse layer (_figures)."""
    first = starts[0].date()
    cursor.execute(_UTC_DAYS, _day_totals_params(first, starts[-2].date()))
    stored: dict = {}
    stale: set[int] = set()
    for day, metric, count, total, median, p90 in cursor.fetchall():
        position = (day - first).days + 1
        if metric not in DURATIONS:
            stored.setdefault(position, {})[metric] = (count, None, None)
        elif total == count:
            stored.setdefault(position, {})[metric] = (count, median, p90)
        else:
            stale.add(position)
    for position in stale:  # read whole: the coarse layer's answer for the day replaces these
        stored.pop(position, None)
    return stored, sorted(stale)


def _day_percentiles_store(cursor, starts: list[datetime], figures: dict) -> None:
    """Stores the medians and p90s just read for these UTC days (by position), with the totals they are of."""
    rows = sorted(
        (starts[position - 1].date(), metric, total, median, p90)
        for position, by_metric in figures.items()
        for metric, (total, median, p90) in by_metric.items()
        if metric in DURATIONS and total > 0 and median is not None and p90 is not None
    )
    _store(cursor, _DAY_PERCENTILES_STORE, rows)


def _store(cursor, statement: str, rows: list[tuple]) -> None:
    """One sorted upsert of the days' figures a summary just read. Another summary storing the same day at once
    may make this one's snapshot too old to write (REPEATABLE READ): then it stores nothing, the figures it
    answers are exact all the same."""
    if not rows:
        return
    try:
        with transaction.atomic():
            cursor.execute(statement, [list(column) for column in zip(*rows)])
    except OperationalError:
        pass


_DAY_PERCENTILES_STORE = """
INSERT INTO reports_daypercentiles AS d (day, metric, total, median, p90)
SELECT * FROM unnest(%s::date[], %s::text[], %s::bigint[], %s::int[], %s::int[])
ON CONFLICT (day, metric) DO UPDATE SET total = EXCLUDED.total, median = EXCLUDED.median, p90 = EXCLUDED.p90
"""


# --- a range of days that are not UTC days: their stored figures (reports.models.LocalDay) ---------------------

_LOCAL_DAYS = """
SELECT since, until, metric, totals, count, median, p90 FROM reports_localday WHERE since >= %s AND since < %s
"""


def _overlapped(since: datetime, until: datetime) -> list[date]:
    """The UTC days [since, until) overlaps (two for a day whose start is no UTC midnight)."""
    first, last = since.astimezone(UTC).date(), (until - timedelta(microseconds=1)).astimezone(UTC).date()
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _local_days(cursor, starts: list[datetime]) -> tuple[dict, list[int], dict]:
    """For a range of days that are not UTC days: {day's position: {metric: (N, median, p90)}} for the days
    whose every metric's stored figures are of the current sum of the overlapped UTC days' totals, the
    positions of the others (read from the coarse layer, _figures), and every day's sums {position: {metric:
    sum}} (what the others are stored with). A metric whose sum is 0 has no event in the day: nothing stored."""
    cursor.execute(_DAY_TOTALS, _day_totals_params(_overlapped(starts[0], starts[1])[0], _overlapped(starts[-2], starts[-1])[-1]))
    by_day: dict[date, dict[str, int]] = {}
    for day, metric, count in cursor.fetchall():
        by_day.setdefault(day, {})[metric] = count
    cursor.execute(_LOCAL_DAYS, [starts[0], starts[-1]])
    rows: dict = {}
    for since, until, metric, totals, count, median, p90 in cursor.fetchall():
        rows.setdefault((since, until), {})[metric] = (totals, (count, median, p90))
    stored, stale, day_totals = {}, [], {}
    for position in range(1, len(starts)):
        since, until = starts[position - 1], starts[position]
        sums: dict[str, int] = {}
        for day in _overlapped(since, until):
            for metric, count in by_day.get(day, {}).items():
                sums[metric] = sums.get(metric, 0) + count
        day_totals[position] = sums
        kept = rows.get((since, until), {})
        if all(kept.get(metric, (None,))[0] == total for metric, total in sums.items() if total):
            stored[position] = {metric: figures for metric, (_, figures) in kept.items()}
        else:
            stale.append(position)
    return stored, stale, day_totals


def _local_days_store(cursor, starts: list[datetime], figures: dict, day_totals: dict) -> None:
    """Stores the figures just read for these days (by position), each metric's with the sum it is of: every
    metric with an event in the overlapped UTC days (a count of 0, or no median, included)."""
    rows = sorted(
        (starts[position - 1], starts[position], metric, total, *by_metric.get(metric, (0, None, None)))
        for position, by_metric in figures.items()
        for metric, total in day_totals[position].items()
        if total
    )
    _store(cursor, _LOCAL_DAYS_STORE, rows)


_LOCAL_DAYS_STORE = """
INSERT INTO reports_localday AS s (since, until, metric, totals, count, median, p90)
SELECT * FROM unnest(%s::timestamptz[], %s::timestamptz[], %s::text[], %s::bigint[], %s::bigint[], %s::int[], %s::int[])
ON CONFLICT (since, until, metric) DO UPDATE
    SET totals = EXCLUDED.totals, count = EXCLUDED.count, median = EXCLUDED.median, p90 = EXCLUDED.p90
"""


# --- the read: two phases over the coarse layer (reports.models.RollupPeriod) -------------------------------
#
# Every group's interval of UTC instants (a tz day, or the whole range) is split into whole UTC days, which
# become months where that reads fewer periods (a month minus its days outside the interval), and at most two
# ragged edges shorter than half a day, read from the 15-minute rollups, added or taken away. Phase 1 merges
# the value bins of those periods and edges per group and metric: the counts, N, and for each median and p90
# the bin holding it and its rank inside. Phase 2 reads only those bins' exact seconds over the same periods
# and edges, and walks them to the rank. Both in SQL: only the answers come back.

_PERIODS = """
periods AS (
    SELECT * FROM unnest(%(p_dims)s::text[], %(p_spans)s::text[], %(p_periods)s::date[], %(p_signs)s::int[],
                         %(p_groups)s::bigint[]) AS p(dim, span, period, sign, grp)
), edges AS (
    SELECT * FROM unnest(%(q_dims)s::text[], %(q_since)s::timestamptz[], %(q_until)s::timestamptz[],
                         %(q_signs)s::int[], %(q_groups)s::bigint[]) AS q(dim, since, until, sign, grp)
), edge AS MATERIALIZED (
    -- The ragged edges' 15-minute rows, per group (grp NULL: the row's agent or application).
    SELECT coalesce(q.grp, CASE q.dim WHEN 'g' THEN r.agent_id WHEN 'a' THEN r.application_id ELSE 0 END) AS grp,
           r.metric COLLATE "C" AS metric, r.seconds, {bin} AS bin, sum(r.count::int * q.sign)::int AS n
    FROM edges AS q JOIN reports_rollup AS r ON r.bucket >= q.since AND r.bucket < q.until
    GROUP BY 1, 2, 3, 4
)
"""

_BINS = f"""
WITH {_PERIODS.format(bin=BIN_SQL.format(metric="r.metric", seconds="r.seconds"))},
bins AS (
    -- LATERAL: one index-only scan of each period's bins (rollup_period_bins), never the whole table's.
    SELECT coalesce(p.grp, r.key) AS grp, r.metric COLLATE "C" AS metric, r.bin, sum(r.count::int * p.sign)::int AS n
    FROM periods AS p CROSS JOIN LATERAL (
        SELECT key, metric, bin, count FROM reports_rollupperiod
        WHERE dimension = p.dim AND span = p.span AND period = p.period AND seconds = -1
        OFFSET 0  -- kept a subquery: pulled up, the planner hashes a scan of the whole table instead
    ) AS r
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT grp, metric, bin, n FROM edge
), merged AS (
    SELECT grp, metric, bin, sum(n)::int AS n FROM bins GROUP BY 1, 2, 3 HAVING sum(n) <> 0
), walked AS (
    SELECT grp, metric, bin, n, (sum(n) OVER (PARTITION BY grp, metric ORDER BY bin))::int - n AS before,
           (sum(n) OVER (PARTITION BY grp, metric))::int AS total
    FROM merged
)
-- The bins holding the nearest ranks ceil(0.5 N) and ceil(0.9 N) (in integers): one row for a count.
SELECT grp, metric, total, bin, before, n FROM walked
WHERE (before < (total + 1) / 2 AND (total + 1) / 2 <= before + n)
   OR (before < (9 * total + 9) / 10 AND (9 * total + 9) / 10 <= before + n)
"""

_EXACT = f"""
WITH {_PERIODS.format(bin=BIN_SQL.format(metric="r.metric", seconds="r.seconds"))},
targets AS (
    SELECT * FROM unnest(%(t_ids)s::int[], %(t_groups)s::bigint[], %(t_metrics)s::text[], %(t_bins)s::int[],
                         %(t_ranks)s::bigint[]) AS t(id, grp, metric, bin, rank)
), lookups AS (
    SELECT * FROM unnest(%(l_ids)s::int[], %(l_dims)s::text[], %(l_spans)s::text[], %(l_periods)s::date[],
                         %(l_signs)s::int[], %(l_keys)s::bigint[], %(l_metrics)s::text[], %(l_bins)s::int[],
                         %(l_ranks)s::bigint[])
        AS l(id, dim, span, period, sign, key, metric, bin, rank)
), exact AS (
    -- LATERAL: one index scan of rollup_period_key per period and bin.
    SELECT l.id, l.rank, r.seconds, r.count::int * l.sign AS n
    FROM lookups AS l CROSS JOIN LATERAL (
        SELECT seconds, count FROM reports_rollupperiod
        WHERE dimension = l.dim AND metric = l.metric AND span = l.span AND bin = l.bin AND period = l.period
          AND key = l.key AND seconds >= 0
        OFFSET 0
    ) AS r
    WHERE l.key IS NOT NULL
    UNION ALL
    -- Key NULL: every chat's seconds, which the layer keeps per application only: that bin's rows of every
    -- application (one index scan, the key's range), summed in `merged`.
    SELECT l.id, l.rank, r.seconds, r.count::int * l.sign AS n
    FROM lookups AS l CROSS JOIN LATERAL (
        SELECT seconds, count FROM reports_rollupperiod
        WHERE dimension = 'a' AND metric = l.metric AND span = l.span AND bin = l.bin AND period = l.period
          AND seconds >= 0
        OFFSET 0
    ) AS r
    WHERE l.key IS NULL
    UNION ALL
    SELECT t.id, t.rank, e.seconds, e.n FROM targets AS t JOIN edge AS e ON e.grp = t.grp AND e.metric = t.metric AND e.bin = t.bin
), merged AS (
    SELECT id, rank, seconds, sum(n)::int AS n FROM exact GROUP BY 1, 2, 3 HAVING sum(n) <> 0
), walked AS (
    SELECT id, rank, seconds, sum(n) OVER (PARTITION BY id ORDER BY seconds) AS upto FROM merged
)
SELECT DISTINCT ON (id) id, seconds FROM walked WHERE upto >= rank ORDER BY id, seconds
"""

_DAY = timedelta(days=1)
_TOTAL_GROUP = -1  # the totals' group; agents' keys are >= 0 (0: none), applications' > 0, days' positions > 0


def _nearest_midnight(at: datetime) -> datetime:
    midnight = datetime.combine(at.astimezone(UTC).date(), time(0), tzinfo=UTC)
    return midnight if at - midnight <= midnight + _DAY - at else midnight + _DAY


@dataclass(frozen=True)
class _Pieces:
    periods: list[tuple[str, date, int]]  # (span, first day, sign)
    edges: list[tuple[datetime, datetime, int]]  # 15-minute rows in [since, until), with a sign


def _pieces(since: datetime, until: datetime, today: date) -> _Pieces:
    """[since, until) as signed UTC days and months and at most two signed edges under 12 hours each."""
    low, high = _nearest_midnight(since), _nearest_midnight(until)
    if low == high:  # shorter than a day, around one midnight
        return _Pieces(periods=[], edges=[(since, until, 1)])
    edges = []
    if low != since:
        edges.append((low, since, -1) if low < since else (since, low, 1))
    if high != until:
        edges.append((until, high, -1) if high > until else (high, until, 1))
    days = [low.date() + timedelta(days=offset) for offset in range((high - low).days)]
    periods: list[tuple[str, date, int]] = []
    by_month: dict[date, list[date]] = {}
    for day in days:
        by_month.setdefault(day.replace(day=1), []).append(day)
    for month, inside in by_month.items():
        following = (month + timedelta(days=32)).replace(day=1)
        outside = [month + timedelta(days=offset) for offset in range((following - month).days)]
        outside = [day for day in outside if day not in set(inside)]
        # Days after today hold no rows yet: taking them away costs an empty probe each, not a read.
        if 1 + sum(1 if day <= today else 0.1 for day in outside) < len(inside):
            periods.append(("m", month, 1))
            periods += [("d", day, -1) for day in outside]
        else:
            periods += [("d", day, 1) for day in inside]
    return _Pieces(periods=periods, edges=edges)


def _figures(cursor, intervals: list[tuple[int | None, str, datetime, datetime]]) -> dict:
    """{group: {metric: (N, median, p90)}} for each (group, dimension, since, until); group None: one group
    per key of the dimension (agent, application)."""
    today = timezone.now().astimezone(UTC).date()
    pieces = {group: (dimension, _pieces(since, until, today)) for group, dimension, since, until in intervals}
    params: dict = {name: [] for name in ("p_dims", "p_spans", "p_periods", "p_signs", "p_groups",
                                          "q_dims", "q_since", "q_until", "q_signs", "q_groups")}  # fmt: skip
    for group, (dimension, piece) in pieces.items():
        for span, period, sign in piece.periods:
            for name, value in zip(("p_dims", "p_spans", "p_periods", "p_signs", "p_groups"), (dimension, span, period, sign, group)):
                params[name].append(value)
        for since, until, sign in piece.edges:
            for name, value in zip(("q_dims", "q_since", "q_until", "q_signs", "q_groups"), (dimension, since, until, sign, group)):
                params[name].append(value)
    figures: dict = {}
    targets: list[tuple[int, str, int, int, int]] = []  # (group, metric, which, bin, rank inside the bin)
    cursor.execute(_BINS, params)
    for group, metric, total, bin_, before, count in cursor.fetchall():
        figures.setdefault(group, {})[metric] = [total, None, None]
        if metric in DURATIONS:
            for which, rank in ((1, (total + 1) // 2), (2, (9 * total + 9) // 10)):
                if before < rank <= before + count:
                    targets.append((group, metric, which, bin_, rank - before))
    if targets:
        exact = {name: [] for name in ("t_ids", "t_groups", "t_metrics", "t_bins", "t_ranks", "l_ids", "l_dims",
                                        "l_spans", "l_periods", "l_signs", "l_keys", "l_metrics", "l_bins", "l_ranks")}  # fmt: skip
        for target_id, (group, metric, _, bin_, rank) in enumerate(targets):
            for name, value in zip(("t_ids", "t_groups", "t_metrics", "t_bins", "t_ranks"), (target_id, group, metric, bin_, rank)):
                exact[name].append(value)
            # The interval this group was read over: its own (a day, the totals) or its dimension's.
            dimension, piece = pieces[group] if group in pieces and group is not None else pieces[None]
            key = 0 if group in pieces else group
            if dimension == "n":  # every chat's exact seconds: the applications' (reports.services._upsert)
                key = None
            for span, period, sign in piece.periods:
                for name, value in zip(
                    ("l_ids", "l_dims", "l_spans", "l_periods", "l_signs", "l_keys", "l_metrics", "l_bins", "l_ranks"),
                    (target_id, dimension, span, period, sign, key, metric, bin_, rank),
                ):
                    exact[name].append(value)
        cursor.execute(_EXACT, {**params, **exact})
        for target_id, seconds in cursor.fetchall():
            group, metric, which, _, _ = targets[target_id]
            figures[group][metric][which] = seconds
    return {group: {metric: tuple(values) for metric, values in by_metric.items()} for group, by_metric in figures.items()}


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
