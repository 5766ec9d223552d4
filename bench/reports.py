"""The `reports` scenario of bench/run (issue 23): GET /api/reports/summary on a tenant with 10k chats and on one
with 1M, through gunicorn, for each `group_by`.

Each tenant is built in bulk (SQL generate_series, up to now, over the same span for every size: the largest size
at `--report-chats-per-day`, 1,000 days for 1M at 1,000 a day, and the 10k tenant 10 a day over those days, so that
a range reads as many days of history at both sizes and the ratio compares sizes, not history lengths; the 10k
tenant at the same rate would have ten days: its "year" read ten), with two applications, ten agents,
and for every chat a first assignment (its history row too), a first response and, once due, a resolution, the
durations drawn from exponential distributions (means 2 min, 5 min, 1 h) to the microsecond. No messages: the
first response is set on the chat (the rollups count messages per bucket, a row per bucket and agent, which
costs the summary little beside the duration histograms). The rollups are then built by the product's backfill
(`reports_backfill_step` in batches, timed), as `manage.py reports_backfill` builds them after a deploy.

Timed: `--report-requests` sequential requests per (size, group_by) for the default range (`--report-requests-longest`
for the longest), alternating the sizes so that a busy
moment of the shared machine weighs on both; p50/p99 at the client. Ranges: the default (the last 7 days), and the
longest allowed (366 days: issue 23's target is for any summary; a summary reads the coarse layer's bins and then
one bin's seconds per median and p90, so its cost follows the periods and the groups, not the chats), in UTC, in
Kolkata (+05:30) and New York (DST days of 23 and 25 hours): their days are not UTC days, each day's figures are
stored by the first summary by day (reports.models.LocalDay): the "cold" cells empty that table before each timed
request (the first summary of a range after a deploy or a backfill), the others read what the warm-up stored.
"""

import http.client
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

PASSWORD = "bench-password-123"
TARGETS = {"p99_ms": 200.0, "ratio_1m_to_10k": 1.5}
GROUP_BYS = ("day", "agent", "application")

_FILL = ["SELECT setseed(0.23)", """
WITH agents AS (SELECT array_agg(user_id ORDER BY user_id) AS ids FROM agents_agent),
apps AS (SELECT array_agg(id ORDER BY id) AS ids FROM conversations_application),
spread AS (
    SELECT i, apps.ids[1 + i %% 2] AS application_id, i / 2 + 1 AS number,
           agents.ids[1 + (i * 7) %% array_length(agents.ids, 1)] AS agent_id,
           now() - make_interval(secs => (%(count)s - i) * 86400.0 / %(per_day)s) AS created_at,
           make_interval(secs => -ln(1 - random()) * 120) AS wait,
           make_interval(secs => -ln(1 - random()) * 300) AS response,
           make_interval(secs => -ln(1 - random()) * 3600) AS resolution
    FROM generate_series(0, %(count)s - 1) AS i, agents, apps
)
INSERT INTO conversations_chat (application_id, number, status, customer_id, messages_count, created_at, updated_at,
                                assigned_agent_id, assigned_at, first_assigned_at, first_response_at, resolved_at)
SELECT application_id, number,
       CASE WHEN created_at + resolution < now() THEN 'resolved' ELSE 'assigned' END,
       'customer-' || i, 0, created_at, created_at, agent_id, created_at + wait, created_at + wait,
       created_at + wait + response,
       CASE WHEN created_at + resolution < now() THEN created_at + resolution END
FROM spread
""", """
INSERT INTO agents_assignment (chat_id, agent_id, reason, assigned_at, ended_at, end_reason)
SELECT id, assigned_agent_id, 'queue', first_assigned_at, resolved_at,
       CASE WHEN resolved_at IS NULL THEN '' ELSE 'resolved' END
FROM conversations_chat
""", """
UPDATE conversations_application AS app SET chats_count = c.total
FROM (SELECT application_id, count(*) AS total FROM conversations_chat GROUP BY application_id) AS c
WHERE c.application_id = app.id
"""]


def add_arguments(parser) -> None:
    group = parser.add_argument_group("reports")
    group.add_argument("--report-sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="reports: chats per tenant")
    group.add_argument("--report-chats-per-day", type=int, default=1_000,
                       help="reports: arrival rate of the largest size's history; the others span as many days")
    group.add_argument("--report-requests", type=int, default=60, help="reports: timed requests per size and group_by")
    group.add_argument("--report-requests-longest", type=int, default=5,
                       help="reports: the same for the longest range (366 days)")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a local process so far (/proc; the bench's PostgreSQL runs here)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tenant(size: int, per_day: float) -> dict:
    from django.db import connection
    from django_tenants.utils import schema_context

    from agents.services import agent_create
    from conversations.services import application_create
    from core.models import User
    from core.services import user_token_get_or_create
    from reports.models import Rollup, RollupPeriod
    from django.conf import settings

    from reports.services import reports_backfill_start, reports_backfill_step
    from tenants.models import Tenant
    from tenants.services import tenant_create

    slug = f"reports{size}"
    tenant = Tenant.objects.filter(schema_name=slug).first()
    built = {}
    if tenant is None:
        tenant = tenant_create(name=slug, slug=slug, admin_email=f"admin@{slug}.test", admin_password=PASSWORD)
    with schema_context(slug):
        if not Rollup.objects.exists():
            for index in range(2):
                application_create(name=f"channel {index}")
            for index in range(10):
                agent_create(email=f"agent{index}@{slug}.test", password=PASSWORD, is_online=False, max_customers=10)
            started = time.perf_counter()
            with connection.cursor() as cursor:
                for statement in _FILL:
                    cursor.execute(statement, {"count": size, "per_day": per_day} if "%(" in statement else None)
            built["fill_seconds"] = round(time.perf_counter() - started, 1)
            # As a deploy meets existing chats: migration reports.0002 marks the backfill, `reports_backfill`
            # runs it batch by batch (timed: the whole, and the longest batch, during which the tenant's report
            # hooks wait).
            reports_backfill_start()
            batch_size = settings.REPORTS_BACKFILL_BATCH_SIZE
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend = cursor.fetchone()[0]
            started, durations, cpu = time.perf_counter(), [], []
            while True:
                batch_started, cpu_started = time.perf_counter(), _cpu_seconds(backend)
                step = reports_backfill_step(batch_size=batch_size)
                durations.append(time.perf_counter() - batch_started)
                cpu.append(_cpu_seconds(backend) - cpu_started)
                if step.done:
                    break
            batches, longest = len(durations), max(durations)
            built["backfill_seconds"] = round(time.perf_counter() - started, 1)
            built["backfill_batches"] = batches
            built["backfill_batch_size"] = batch_size
            built["backfill_longest_batch_ms"] = round(longest * 1000, 1)
            built["backfill_median_batch_ms"] = round(statistics.median(durations) * 1000, 1)
            # Which batch was the longest (1-based), and the ten longest: one outlier or a trend?
            built["backfill_longest_batch_number"] = durations.index(longest) + 1
            built["backfill_longest_batches_ms"] = sorted((round(d * 1000) for d in durations), reverse=True)[:10]
            # The PostgreSQL backend's CPU during the longest batch: near its wall time, the statement worked;
            # far below, it waited (a lock, the disk, or a process stopped from outside).
            built["backfill_longest_batch_backend_cpu_ms"] = round(cpu[durations.index(longest)] * 1000, 1)
            built["rollup_rows"] = Rollup.objects.count()
            built["rollup_period_rows"] = RollupPeriod.objects.count()
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE reports_rollup")
                cursor.execute("VACUUM ANALYZE reports_rollupperiod")
        admin = User.objects.get(email=f"admin@{slug}.test")
        token = user_token_get_or_create(user=admin).key
    return {"slug": slug, "token": token, **built}


# A drain batch on the tenant as it is: 20 new chats (assigned 2 minutes ago), each with two customer messages
# and its first agent reply, inserted in a savepoint that is rolled back after the drain's hook statement
# (reports.services._CREATIONS_PERSISTED) was EXPLAIN ANALYZEd on them (the first statement takes no
# parameters: its % is not doubled).
_HOOK_BATCH = [
    """
    INSERT INTO conversations_chat (application_id, number, status, customer_id, messages_count, created_at, updated_at,
                                    assigned_agent_id, assigned_at, first_assigned_at)
    SELECT apps.ids[1 + g % 2], 2000000000 + g, 'assigned', 'hook-' || g, 3, now() - interval '2 minutes', now(),
           agents.ids[1 + g % array_length(agents.ids, 1)], now() - interval '1 minute', now() - interval '1 minute'
    FROM generate_series(0, 19) AS g,
         (SELECT array_agg(id ORDER BY id) AS ids FROM conversations_application) AS apps,
         (SELECT array_agg(user_id ORDER BY user_id) AS ids FROM agents_agent) AS agents
    RETURNING id
    """,
    """
    INSERT INTO conversations_message (chat_id, number, body, sender, author_id, is_private, attachments, created_at, updated_at)
    SELECT c.id, m.number, 'hi', CASE WHEN m.number = 3 THEN 'agent' ELSE 'customer' END,
           CASE WHEN m.number = 3 THEN c.assigned_agent_id END, false, '[]',
           now() - make_interval(secs => 60 - m.number * 10 - c.id %% 7), now()
    FROM conversations_chat AS c, generate_series(1, 3) AS m(number)
    WHERE c.id = ANY(%(chats)s)
    RETURNING id
    """,
]


def _hook_cost(slug: str, runs: int = 10) -> dict:
    """What the drain's report hook costs on this tenant for a batch of 20 chats and 60 messages (20 first
    replies): the statement's execution time, the part of it spent writing each layer, and the rows each
    wrote (medians of `runs`, each rolled back)."""
    from django.db import connection, transaction
    from django_tenants.utils import schema_context

    from reports.services import _CREATIONS_PERSISTED

    def flatten(plan: dict):
        yield plan
        for child in plan.get("Plans", []):
            yield from flatten(child)

    samples: dict[str, list[float]] = {}
    with schema_context(slug), transaction.atomic(), connection.cursor() as cursor:
        for _ in range(runs):
            cursor.execute("SAVEPOINT hook")
            cursor.execute(_HOOK_BATCH[0])
            chats = [row[0] for row in cursor.fetchall()]
            cursor.execute(_HOOK_BATCH[1], {"chats": chats})
            messages = [row[0] for row in cursor.fetchall()]
            cursor.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _CREATIONS_PERSISTED,
                {"chats": chats, "messages": messages},
            )
            plan = cursor.fetchone()[0]
            plan = plan if isinstance(plan, list) else json.loads(plan)
            cursor.execute("ROLLBACK TO SAVEPOINT hook")
            samples.setdefault("statement_ms", []).append(plan[0]["Execution Time"])
            samples.setdefault("planning_ms", []).append(plan[0]["Planning Time"])
            for node in flatten(plan[0]["Plan"]):
                if node["Node Type"] == "ModifyTable" and node.get("Relation Name", "").startswith("reports_"):
                    samples.setdefault(f"{node['Relation Name']}_ms", []).append(node["Actual Total Time"])
                    samples.setdefault(f"{node['Relation Name']}_rows", []).append(node["Actual Rows"])
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def scenario_reports(args, processes) -> dict:
    from bench import bench as harness  # here, not at import: bench.bench registers this scenario

    # Every size over the largest one's span of days (module docstring: the ratio then compares sizes).
    per_day = {size: args.report_chats_per_day * size / max(args.report_sizes) for size in args.report_sizes}
    tenants = {size: _tenant(size, per_day[size]) for size in args.report_sizes}
    harness._database_settle()
    url = harness.start_web(processes, workers=2, threads=2)
    address = urlsplit(url)

    def get(size: int, query: dict) -> tuple[float, dict]:
        tenant = tenants[size]
        # A connection per request: gunicorn closes one left idle past its keep-alive while the other size runs.
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        started = time.perf_counter()
        connection.request(
            "GET",
            "/api/reports/summary?" + urlencode(query),
            headers={"Host": f"{tenant['slug']}.localhost", "Authorization": f"Token {tenant['token']}"},
        )
        response = connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"summary answered {response.status}: {body[:300]!r}")
        return elapsed, json.loads(body)

    def local_days_empty(size: int) -> None:
        from django.db import connection as database
        from django_tenants.utils import schema_context

        with schema_context(tenants[size]["slug"]), database.cursor() as cursor:
            cursor.execute("DELETE FROM reports_localday")

    today = datetime.now(UTC).date()
    year = {"since": (today - timedelta(days=365)).isoformat(), "until": today.isoformat()}
    # (name, query, group_bys, cold: the zone's stored days emptied before each timed request)
    cells = [
        ("default_7_days", {}, GROUP_BYS, False),
        ("longest_366_days", year, GROUP_BYS, False),
        ("longest_366_days_kolkata", {**year, "tz": "Asia/Kolkata"}, GROUP_BYS, False),
        ("longest_366_days_kolkata_cold", {**year, "tz": "Asia/Kolkata"}, ("day",), True),
        ("longest_366_days_new_york", {**year, "tz": "America/New_York"}, ("day",), False),
        ("longest_366_days_new_york_cold", {**year, "tz": "America/New_York"}, ("day",), True),
    ]
    results: dict = {str(size): {**{k: v for k, v in tenant.items() if k != "token"}} for size, tenant in tenants.items()}
    for size in tenants:
        results[str(size)]["chats_per_day"] = round(per_day[size], 2)
    for range_name, range_query, group_bys, cold in cells:
        for group_by in group_bys:
            query = {**range_query, "group_by": group_by}
            for size in tenants:  # warm-up: connection, imports, caches (and the stored days)
                for _ in range(3 if range_name == "default_7_days" else 1):
                    _, body = get(size, query)
                results[str(size)].setdefault(range_name, {})[group_by] = {"chats_created": body["totals"]["chats_created"]}
            samples = {size: [] for size in tenants}
            count = args.report_requests if range_name == "default_7_days" else args.report_requests_longest
            for _ in range(count):
                for size in tenants:
                    if cold:
                        local_days_empty(size)
                    samples[size].append(get(size, query)[0])
            for size in tenants:
                results[str(size)][range_name][group_by].update(
                    p50_ms=round(statistics.median(samples[size]), 2), p99_ms=round(_percentile(samples[size], 0.99), 2)
                )
    processes.stop("web")
    for size, tenant in tenants.items():
        results[str(size)]["drain_hook"] = _hook_cost(tenant["slug"])
    small, large = str(min(tenants)), str(max(tenants))
    ratios = {
        range_name: {
            group_by: round(results[large][range_name][group_by]["p99_ms"] / results[small][range_name][group_by]["p99_ms"], 2)
            for group_by in group_bys
        }
        for range_name, _, group_bys, _ in cells
    }
    return {
        "sizes": args.report_sizes,
        "chats_per_day": args.report_chats_per_day,
        "requests": args.report_requests,
        "levels": results,
        "p99_ratio_largest_to_smallest": ratios,
        "targets": {"p99_ms": "<= 200", "p99_ratio_largest_to_smallest": "<= 1.5"},
    }


def markdown_lines(r: dict) -> list[str]:
    sizes = [str(size) for size in r["sizes"]]
    lines = [
        "## reports: GET /api/reports/summary (issue 23)",
        "",
        f"History over the same days for every size ({r['chats_per_day']} chats/day for the largest; "
        + ", ".join(f"{size}: {r['levels'][size].get('chats_per_day', '?')}/day" for size in sizes)
        + f"); {r['requests']} sequential requests per cell (the 366-day ones fewer), sizes alternating; cold: the "
        "zone's stored days emptied before each request. Target: p99 <= 200 ms, p99 ratio largest/smallest <= 1.5.",
        "",
        "| range | group_by | " + " | ".join(f"{size} chats p50 / p99 ms" for size in sizes) + " | p99 ratio |",
        "| --- | --- | " + " | ".join("---" for _ in sizes) + " | --- |",
    ]
    for range_name, by_group in r["p99_ratio_largest_to_smallest"].items():
        for group_by, ratio in by_group.items():
            cells = [
                f"{r['levels'][size][range_name][group_by]['p50_ms']} / {r['levels'][size][range_name][group_by]['p99_ms']}"
                for size in sizes
            ]
            lines.append(f"| {range_name} | {group_by} | " + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    for size in sizes:
        level = r["levels"][size]
        if "backfill_seconds" in level:
            lines.append(
                f"- {size} chats: filled in {level['fill_seconds']} s, rollups backfilled in {level['backfill_seconds']} s "
                f"({level['rollup_rows']} 15-minute rows, {level.get('rollup_period_rows', '?')} day and month rows; {level['backfill_batches']} batches of {level['backfill_batch_size']} chats, "
                f"the longest {level['backfill_longest_batch_ms']} ms (batch {level.get('backfill_longest_batch_number', '?')}), "
                f"median {level.get('backfill_median_batch_ms', '?')} ms; the longest used "
                f"{level.get('backfill_longest_batch_backend_cpu_ms', '?')} ms of the backend's CPU)"
            )
        if "drain_hook" in level:
            hook = level["drain_hook"]
            lines.append(
                f"- {size} chats, the drain's report hook for 20 chats and 60 messages (20 first replies), median of 10: "
                f"{hook['statement_ms']} ms (planned in {hook.get('planning_ms', '?')} ms); 15-minute rows {hook.get('reports_rollup_rows')} in {hook.get('reports_rollup_ms')} ms, "
                f"day and month rows {hook.get('reports_rollupperiod_rows')} in {hook.get('reports_rollupperiod_ms')} ms"
            )
    return lines
