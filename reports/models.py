from django.db import models

from conversations.models import Application


class Rollup(models.Model):
    """Exact pre-counted figures: how many events of one kind (`metric`) fell in one 15-minute UTC bucket, for
    one application and one agent; for a duration metric, how many of them lasted exactly `seconds`.

    A histogram per bucket rather than a total: medians and p90s of any range are then exact (the histograms of
    the range merged), and every IANA zone's day is a union of 15-minute buckets. Written by reports.services
    in the same transaction as the change it counts (upserts that add, so concurrent writers never lose a
    count); `reports_rebuild` recomputes it from the chats and messages. See docs/reports.md.
    """

    class Metric(models.TextChoices):
        CREATED = "created", "Chats created (bucket of created_at)"
        RESOLVED = "resolved", "Chats resolved (bucket of resolved_at)"
        MESSAGES = "messages", "Messages (bucket of the message's created_at)"
        FIRST_RESPONSE = "first_response", "Seconds from creation to the first agent message"
        WAIT = "wait", "Seconds from creation to the first assignment"
        RESOLUTION = "resolution", "Seconds from creation to resolution"
        SLA_BREACHED = "sla_breached", "SLA breaches (bucket of the breach)"

    bucket = models.DateTimeField(help_text="Start of the 15-minute UTC bucket.")
    application = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False, related_name="+")
    # The agent's user id, 0 for none (a chat's creation, a customer's message): a plain column, not a foreign
    # key, so the figures of a deleted agent stay (as agents_assignment keeps its history), and 0 rather than
    # NULL so that the unique key decides the upsert.
    agent_id = models.BigIntegerField(default=0)
    metric = models.CharField(max_length=16, choices=Metric.choices)
    seconds = models.IntegerField(default=0, help_text="The duration, for duration metrics; 0 for counts.")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The upsert's conflict target, and the summary's range scan (bucket first; `count` included so
            # that the scan reads the index alone).
            models.UniqueConstraint(
                fields=["bucket", "application", "agent_id", "metric", "seconds"],
                name="rollup_key",
                include=["count"],
            )
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} {self.metric} {self.seconds}s x{self.count}"


class Backfill(models.Model):
    """How far the rollups cover the tenant's chats: one row per schema (id 1).

    `done`: every chat's figures are in the rollups, and the hooks count every event. Otherwise the rollups
    hold exactly the events of the chats with id <= `cursor`: the hooks count only those, and the backfill
    (reports.services.reports_backfill_step, run by `manage.py reports_backfill`) moves the cursor over the
    older chats in batches, counting each batch from the rows. Meanwhile the summary answers 503. A schema
    created empty starts done; migration reports.0002 marks a schema holding chats as not done.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    done = models.BooleanField(default=True)
    cursor = models.BigIntegerField(default=0, help_text="The rollups hold the events of the chats with id <= this.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="reports_backfill_single_row")]

    def __str__(self) -> str:
        return "done" if self.done else f"chats up to {self.cursor}"


class RollupPeriod(models.Model):
    """The rollups again, coarse in time (a UTC day, a UTC month) and projected on one dimension at a time
    (none, the agent, the application), for summaries of long ranges: what a year of 15-minute histogram rows
    (a row per chat and duration, ~1.1M at 1,000 chats a day) makes too slow to merge.

    Rows per (span, period, dimension, key, metric): a value bin's total (`seconds` = -1; `bin` 0 for counts)
    and, for durations, the exact histogram per agent and per application (`seconds` >= 0, `bin` the bin of
    `seconds`; every chat's is the applications' summed) and every chat's UTC day total (`seconds` = -2). A
    summary reads the bins first to find, for each median and p90, the bin holding it and the rank inside it,
    then only that bin's exact seconds over the range (reports.selectors): exact, and the rows read follow the
    bins and the periods, not the chats. Derived from the same events as Rollup, in the same statement
    (reports.services._upsert), so the two never disagree. See docs/reports.md.
    """

    class Span(models.TextChoices):
        DAY = "d", "UTC day"
        MONTH = "m", "UTC month"

    class Dimension(models.TextChoices):
        NONE = "n", "Every chat (key 0)"
        AGENT = "g", "Agent (key: the agent's user id, 0 for none)"
        APPLICATION = "a", "Application (key: its id)"

    dimension = models.CharField(max_length=1, choices=Dimension.choices)
    metric = models.CharField(max_length=16, choices=Rollup.Metric.choices)
    span = models.CharField(max_length=1, choices=Span.choices)
    bin = models.SmallIntegerField(help_text="The value bin of `seconds` (reports.services.BIN_BOUNDS); 0 for counts.")
    period = models.DateField(help_text="The UTC day, or the first day of the UTC month.")
    # A plain column (no foreign key): an application's id or an agent's, as Rollup keeps a deleted agent's.
    key = models.BigIntegerField()
    seconds = models.IntegerField(
        help_text="-1: the bin's total; -2 (a duration, dimension none, a UTC day, bin 0): the day's total; else the exact duration."
    )
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The upsert's conflict target, and the exact read of one bin over a range's periods.
            models.UniqueConstraint(
                fields=["dimension", "metric", "span", "bin", "period", "key", "seconds"],
                name="rollup_period_key",
                include=["count"],
            )
        ]
        indexes = [
            # The bins' read: every bin total of one period (an index-only scan).
            models.Index(
                fields=["dimension", "span", "period"],
                include=["key", "metric", "bin", "count"],
                condition=models.Q(seconds=-1),
                name="rollup_period_bins",
            )
        ]

    def __str__(self) -> str:
        return f"{self.span}{self.period} {self.dimension}{self.key} {self.metric} bin {self.bin} {self.seconds}s x{self.count}"


class DayPercentiles(models.Model):
    """A UTC day's median and p90 of one duration metric over every chat, as a summary computed them from the
    coarse layer, with the day's total (N) they are the order statistics of.

    Kept by the summary (reports.selectors), not by the writers: the hooks only keep the day's total
    (RollupPeriod's `seconds` = -2 row) in the statement they already run. A row is current while its `total`
    equals that total: every writer only adds to a day (until a rebuild or a backfill's start, which empty this
    table), so a day whose histogram changed has a larger total. A year by UTC day then reads 366 totals and
    366 of these per metric instead of every day's bins and seconds. See docs/reports.md.
    """

    day = models.DateField(help_text="The UTC day.")
    metric = models.CharField(max_length=16, choices=Rollup.Metric.choices)
    total = models.BigIntegerField(help_text="The day's N when these were computed.")
    median = models.IntegerField()
    p90 = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "metric"], name="day_percentiles_key", include=["total", "median", "p90"])
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.metric} N={self.total} median {self.median}s p90 {self.p90}s"


class LocalDay(models.Model):
    """One metric's figures over a day of a zone whose days are not UTC days (Kolkata's 18:30 to 18:30 UTC, New
    York's 05:00 to 04:00 on a DST day), as a summary computed them from the coarse layer and the 15-minute edges,
    with `totals`: the sum of that metric's day totals (RollupPeriod's bin 0 for a count, `seconds` = -2 for a
    duration) of the UTC days the local day overlaps.

    Keyed by the day's UTC interval rather than by the zone: zones that share a day (by offset) share its rows.
    Kept by the summary, like DayPercentiles, and current while `totals` equals that sum: between two rebuilds
    every writer only adds, and an event added to the local day adds to one of those UTC days' totals, so the
    sum grows whenever the local day's figures change. A rebuild or a backfill's start empties the table.
    See docs/reports.md.
    """

    since = models.DateTimeField(help_text="The local day's start, in UTC.")
    until = models.DateTimeField(help_text="The next local day's start, in UTC.")
    metric = models.CharField(max_length=16, choices=Rollup.Metric.choices)
    totals = models.BigIntegerField(help_text="The sum of the overlapped UTC days' totals these were computed at.")
    count = models.BigIntegerField(help_text="The local day's count (a duration's N).")
    median = models.IntegerField(null=True, help_text="Null for a count, or no duration in the local day.")
    p90 = models.IntegerField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["since", "until", "metric"], name="local_day_key", include=["totals", "count", "median", "p90"]
            )
        ]

    def __str__(self) -> str:
        return f"{self.since:%Y-%m-%d %H:%M}+{self.until - self.since} {self.metric} totals {self.totals} N={self.count}"
