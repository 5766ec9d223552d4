"""The coarse layer (reports.models.RollupPeriod) the summary reads: every writer keeps it equal to the 15-minute
rollups rolled up by UTC day and month, and summaries whose ranges it serves with months (whole, or minus days),
days and ragged 15-minute edges (zones whose day does not start at a UTC midnight, nor at a whole hour) equal a
recount from the rows."""

import importlib
import threading
from bisect import bisect_right
from collections import Counter
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from conversations.models import Application, Chat
from reports.models import Rollup, RollupPeriod
from reports.selectors import _pieces
from reports.services import (
    BIN_BOUNDS,
    DAY_TOTAL,
    report_chat_resolved,
    report_sla_breached,
    reports_backfill_start,
    reports_backfill_step,
    reports_rebuild,
)
from reports.tests.timeline import recount, utc

SUMMARY = "/api/reports/summary"
DURATIONS = {"first_response", "wait", "resolution"}


def _derived() -> Counter:
    """The coarse layer as it must be: the 15-minute rollups rolled up in Python."""
    rows: Counter = Counter()
    for bucket, application_id, agent_id, metric, seconds, count in Rollup.objects.values_list(
        "bucket", "application_id", "agent_id", "metric", "seconds", "count"
    ):
        day = bucket.date()  # the bucket is in UTC
        duration = metric in DURATIONS
        bin_ = bisect_right(BIN_BOUNDS, seconds) if duration else 0
        for span, period in (("d", day), ("m", day.replace(day=1))):
            for dimension, key in (("n", 0), ("g", agent_id), ("a", application_id)):
                rows[(dimension, metric, span, bin_, period, key, -1)] += count
                if duration and dimension != "n":  # every chat's exact seconds: the applications' summed
                    rows[(dimension, metric, span, bin_, period, key, seconds)] += count
        if duration:  # the UTC day's total, over every chat (DAY_TOTAL)
            rows[("n", metric, "d", 0, day, 0, DAY_TOTAL)] += count
    return rows


def _stored() -> Counter:
    columns = ("dimension", "metric", "span", "bin", "period", "key", "seconds")
    return Counter({tuple(row[:-1]): row[-1] for row in RollupPeriod.objects.values_list(*columns, "count")})


def test_every_writer_keeps_the_coarse_layer_equal_to_the_15_minute_rollups(timeline, tenant_a):
    # The timeline went through the drain's hook, queue and manual assignments, transfers, requeues and
    # resolves (reports/tests/timeline.py); now SLA breaches too.
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.filter(assigned_agent__isnull=False).order_by("id").first()
        with transaction.atomic():
            report_sla_breached(chat_id=chat.id, at=utc(2026, 3, 8, 23, 50))
        stored = _stored()
        assert stored == _derived()
        assert len(stored) > 200 and {key[0] for key in stored} == {"n", "g", "a"}
        assert {key[1] for key in stored} == {"created", "messages", "first_response", "wait", "resolved", "resolution", "sla_breached"}

        # the rebuild rewrites it (the breach kept: only its hook counts it)
        reports_rebuild()
        assert _stored() == stored

        # the backfill writes it batch by batch
        reports_backfill_start()
        assert set(RollupPeriod.objects.values_list("metric", flat=True)) == {"sla_breached"}
        while not reports_backfill_step(batch_size=7).done:
            pass
        assert _stored() == stored


def test_migration_0003_derives_the_coarse_layer_of_existing_rollups(timeline, tenant_a):
    migration = importlib.import_module("reports.migrations.0003_rollup_period")
    with schema_context(tenant_a.schema_name):
        expected = _stored()
        RollupPeriod.objects.all().delete()

        migration.rollup_period_fill(None, SimpleNamespace(connection=connection))

        assert _stored() == expected == _derived()


RANGES = [
    (date(2026, 3, 1), date(2026, 3, 31)),  # a whole month
    (date(2026, 2, 20), date(2026, 4, 10)),  # days of February, March whole, days of April
    (date(2026, 3, 3), date(2026, 4, 2)),  # March minus two days, two days of April
    (date(2026, 3, 8), date(2026, 3, 31)),  # March minus the 1st to the 7th (the timeline's 6th and 7th)
    (date(2026, 3, 7), date(2026, 3, 7)),  # one day
]
# UTC; +05:30 and +05:45 (their days start at 18:30 and 18:15 UTC: an edge added before the first UTC
# midnight); -03:30 and New York across its DST change (days start after a UTC midnight: an edge taken away).
ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "America/New_York"]


@pytest.mark.parametrize("tz", ZONES)
def test_summaries_read_from_months_days_and_edges_equal_a_recount(timeline, tenant_a, tenant_a_admin_api, tz):
    for group_by in ("day", "agent", "application"):
        for since, until in RANGES:
            case = (tz, group_by, since, until)
            query = {"since": since.isoformat(), "until": until.isoformat(), "group_by": group_by, "tz": tz}

            response = tenant_a_admin_api.get(SUMMARY, query)

            assert response.status_code == 200, (case, response.content)
            expected = recount(tenant=tenant_a, since=since, until=until, tz=tz, group_by=group_by)
            assert response.json()["totals"] == expected["totals"], case
            assert {row["key"]: row for row in response.json()["data"]} == {row["key"]: row for row in expected["data"]}, case
    whole = tenant_a_admin_api.get(SUMMARY, {"since": "2026-02-20", "until": "2026-04-10", "tz": tz, "group_by": "agent"})
    assert whole.json()["totals"]["chats_created"] == 60


def test_a_range_is_read_as_months_days_and_edges():
    today = date(2026, 3, 12)

    # UTC: whole days; March read as the month minus the days before the range (past ones cost a read each,
    # those after today none), April's two days as days
    march_minus = _pieces(utc(2026, 3, 8), utc(2026, 4, 3), today)
    assert march_minus.edges == []
    assert march_minus.periods == [
        ("m", date(2026, 3, 1), 1), *[("d", date(2026, 3, day), -1) for day in range(1, 8)],
        ("d", date(2026, 4, 1), 1), ("d", date(2026, 4, 2), 1),
    ]  # fmt: skip
    # the days before today weigh: from the 20th, March's days are read one by one
    assert _pieces(utc(2026, 3, 20), utc(2026, 3, 31), date(2026, 4, 1)).periods == [
        ("d", date(2026, 3, day), 1) for day in range(20, 31)
    ]

    # Kolkata's 2026-03-07 to 03-09: [03-06 18:30, 03-09 18:30) UTC: an edge added at the start, one taken away
    # at the end
    kolkata = _pieces(utc(2026, 3, 6, 18, 30), utc(2026, 3, 9, 18, 30), today)
    assert kolkata.edges == [(utc(2026, 3, 6, 18, 30), utc(2026, 3, 7), 1), (utc(2026, 3, 9, 18, 30), utc(2026, 3, 10), -1)]
    assert kolkata.periods == [("d", date(2026, 3, day), 1) for day in (7, 8, 9)]

    # one local day within one UTC day's half: edges only
    short = _pieces(utc(2026, 3, 7, 1), utc(2026, 3, 7, 5), today)
    assert (short.periods, short.edges) == ([], [(utc(2026, 3, 7, 1), utc(2026, 3, 7, 5), 1)])


def test_concurrent_writers_of_one_day_keep_the_coarse_layer_exact(make_live_tenant):
    """Transactions resolving chats of the same day and application, in different buckets and for different
    agents, at once: each writes several rows of the day's and the month's layer (every dimension), all of
    them land, and none waits for another in a cycle."""
    tenant = make_live_tenant("reports")
    with schema_context(tenant.schema_name):
        application_id = Application.objects.create(name="busy").id
    threads_count, per_thread = 4, 15
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with schema_context(tenant.schema_name):
                start.wait(timeout=30)
                for step in range(per_thread):
                    created = utc(2026, 3, 6, (index + step) % 24, 7)
                    chat = SimpleNamespace(
                        id=0, application_id=application_id, assigned_agent_id=(index + step) % 3 or None,
                        created_at=created, resolved_at=created + timedelta(seconds=60 + step * 37),
                    )  # fmt: skip
                    with transaction.atomic():
                        report_chat_resolved(chat=chat)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    with schema_context(tenant.schema_name):
        assert _stored() == _derived()
        assert RollupPeriod.objects.get(dimension="n", span="m", metric="resolved", seconds=-1).count == threads_count * per_thread
        resolutions = RollupPeriod.objects.filter(dimension="a", span="d", metric="resolution", seconds__gte=0)
        assert sum(resolutions.values_list("count", flat=True)) == threads_count * per_thread


_WRITES = """
SELECT relname, n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables
WHERE schemaname = current_schema() AND relname IN ('reports_rollup', 'reports_rollupperiod')
"""


def _writes() -> Counter:
    with connection.cursor() as cursor:
        cursor.execute(_WRITES)
        return Counter(dict(cursor.fetchall()))


def test_what_a_drain_batch_writes_to_the_rollups(tenant_a, clock, no_drain_task):
    """The hot path's cost of the coarse layer, counted: a drain batch of 20 new chats and 40 customer
    messages, then one of 20 first replies and 20 customer messages. The hook still runs one statement (after
    the backfill lock and the cursor's read, as before the coarse layer); what the layer adds is rows in it:
    per (UTC day and month) x (every chat, the agent, the application), one row per key and metric for a
    count, and for a duration one per bin and (agent and application only) per second, plus the day's total."""
    from agents import services as agent_services
    from conversations import services as conversation_services
    from conversations.models import Message

    with schema_context(tenant_a.schema_name):
        applications = [conversation_services.application_create(name=f"hot {i}") for i in range(2)]
        agents = [
            agent_services.agent_create(email=f"hot{i}@example.test", password="test-password-1234", is_online=True, max_customers=100)
            for i in range(4)
        ]
        clock.at = utc(2026, 3, 6, 10, 0, 1)
        numbers = []
        for index in range(20):
            application = applications[index % 2]
            numbers.append((application, conversation_services.chat_create(application=application, customer_id=f"h{index}")))
            for _ in range(2):
                conversation_services.message_create(application=application, chat_number=numbers[-1][1], body="hello")
        before = _writes()
        with CaptureQueriesContext(connection) as queries:
            conversation_services.creations_persist(batch_size=100)
        first = _writes() - before
        hook = [query["sql"] for query in queries if "reports_" in query["sql"]]

        # then: one statement writes both layers, reading the backfill's cursor itself; 4 rollup rows (created
        # and messages, per application), 16 coarse rows (2 spans x (1 + 1 + 2 keys) x 2 metrics)
        assert len(hook) == 1 and "reports_rollupperiod" in hook[0] and "reports_backfill" in hook[0]
        assert first == Counter({"reports_rollup": 4, "reports_rollupperiod": 16})

        agent_services.assignment_run()
        for index, (application, number) in enumerate(numbers):
            clock.at = utc(2026, 3, 6, 10, 1, 0) + timedelta(seconds=index * 7)
            chat = Chat.objects.get(application=application, number=number)
            conversation_services.message_create(
                application=application, chat_number=number, body="hi", sender=Message.Sender.AGENT, author=chat.assigned_agent
            )
            conversation_services.message_create(application=application, chat_number=number, body="thanks")
        before = _writes()
        conversation_services.creations_persist(batch_size=100)
        second = _writes() - before

        # 20 first responses of 20 different seconds (59 to 192 s: 16 value bins), in one 15-minute bucket
        rollup = Rollup.objects.filter(metric="first_response")
        assert rollup.count() == 20 and len({row.seconds for row in rollup}) == 20
        bins = len({bisect_right(BIN_BOUNDS, row.seconds) for row in rollup})
        keys = {"n": 1, "g": len({row.agent_id for row in rollup}), "a": 2}
        bin_keys = {
            "n": bins,
            "g": len({(row.agent_id, bisect_right(BIN_BOUNDS, row.seconds)) for row in rollup}),
            "a": len({(row.application_id, bisect_right(BIN_BOUNDS, row.seconds)) for row in rollup}),
        }
        messages = Rollup.objects.filter(metric="messages").count()  # customer (per app) + agent (per app, agent)
        assert second["reports_rollup"] == messages + 20
        # messages: 2 spans x (1 + agents and none + 2 apps); first responses: 2 spans x (bins per key + 20 exact
        # per agent and per application: every chat's are theirs summed), and the day's total
        message_keys = 1 + len({row.agent_id for row in Rollup.objects.filter(metric="messages")}) + 2
        assert second["reports_rollupperiod"] == 2 * message_keys + 2 * (sum(bin_keys.values()) + 2 * 20) + 1
        assert keys["g"] == 4 and bin_keys == {"n": 14, "g": 20, "a": 19}
        assert second == Counter({"reports_rollup": 30, "reports_rollupperiod": 203})  # 30 before the coarse layer
