"""Sociomile benchmark harness. Run it through `bench/run`, which starts PostgreSQL and Redis for it.

Every figure is measured side by side in one run on the same machine and reported as a median or a
ratio: these machines are shared and small, so absolute numbers move from run to run.

Scenarios (more are added as capabilities land; see `--only`):
- `create_api`: POST .../messages (202) against the same server's cheapest endpoint, with wrk at 64
  connections, alternating for `--rounds` rounds with a DRF view shaped like the create that does nothing (the
  DRF floor: the best ratio any DRF create could have): throughput ratio and p50/p99 latency (medians), and the CPU
  each costs per request in the web, worker, PostgreSQL and Redis processes (steadier than req/s when the
  machine is shared).
- `drain`: time for the workers to persist N queued message creations, against single-row committed
  INSERTs of the same rows from one psycopg connection.
- `assignment`: one tenant, K online agents with room to spare. Bulk: one `assignment_run` over N waiting
  chats (assignments/s). Arrivals: chats inserted at a steady rate while an assigner loops
  `assignment_run`; p50/p99 from each chat's created_at to the commit of the run that assigned it.
- `read_path`: a tenant per size (10k, 1M messages) holding one chat filled by SQL, a checkpoint once
  autovacuum is done, then wrk on list-messages (first page and a cursor 90% deep) and on search (first and
  deep page, and a deep page that still holds 50 matches at every size) through gunicorn, in `--read-rounds` rounds running each endpoint at every size back to back:
  the median run's p99 per size and the ratio, with EXPLAIN ANALYZE of every query of a search page.
- `provisioning`: `tenant_create` timed (median of a few) once 10 and once 200 tenants exist, and every
  creation made on the way (to see growth); at each level also the schema copy alone, django-tenants'
  `clone_schema` (the copy used before) and the admin's password hash, for where the time goes.
- `outbound`: `outbound_send_due` with a large batch against a local receiver in processes of its own
  (bench/receiver.py: asyncio, 202 + messageId), one run and N concurrent runs: sends/s, duplicates per
  Idempotency-Key, the ratio to bare POSTs (the product's `_post` alone, no database or Redis, just before
  and after each round), CPU milliseconds per message of each process (the sender, the receivers, this
  run's PostgreSQL and Redis: read from /proc), and a cProfile of one run.
- `events`: outgoing webhook deliveries/s against bare signed POSTs, and message create -> delivered p50/p99 at a
  fixed offered rate through a real worker (bench/events.py).
- `tenant_scale`: idle tenants at `--tenant-levels` (built in bulk) beside `--active-tenants` active ones: idle CPU
  and memory of every process, provisioning, and open-loop create -> readable / assigned (bench/tenant_scale.py).
- `reports`: GET /api/reports/summary p50/p99 per group_by on a tenant of 10k and one of 1M chats (bench/reports.py).
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import events as events_scenario
from bench import reports, tenant_scale
from bench import stream as stream_scenario

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SLUG = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Processes:
    """Background processes of the run (gunicorn, celery), stopped with SIGTERM at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        self.running[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def start_web(processes: Processes, *, workers: int, threads: int) -> str:
    port = free_port()
    processes.start(
        "web",
        [sys.executable, "-m", "gunicorn", "sociomile.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads), "--backlog", "2048"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(answers, 30, "gunicorn")
    return url


def start_worker(processes: Processes, *, concurrency: int, log_dir: Path) -> None:
    ready = log_dir / "worker.log"
    processes.start(
        "worker",
        [sys.executable, "-m", "celery", "-A", "sociomile", "worker", "-Q", "platform", "--concurrency", str(concurrency),
         "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--hostname", f"bench-{time.time_ns()}@%h"],
    )  # fmt: skip
    wait_until(lambda: "ready." in ready.read_text(), 60, "the celery worker")


_WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(*, url: str, host: str, seconds: int, connections: int, method: str = "GET", body: str | None = None) -> dict:
    """One wrk run; returns requests/s, p50/p99 in ms and the count of non-2xx answers."""
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(f'wrk.method = "{method}"\nwrk.headers["Host"] = "{host}"\nwrk.headers["Content-Type"] = "application/json"\n')
    if body is not None:
        script.write(f"wrk.body = {json.dumps(body)}\n")
    script.close()
    output = subprocess.run(
        ["wrk", "--threads", "2", "--connections", str(connections), "--duration", f"{seconds}s", "--latency",
         "--script", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    latency = {f"p{p}": round(float(v) * _UNIT_MS[u], 3) for p, v, u in _WRK_LATENCY.findall(output)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "connections": connections,
        "seconds": seconds,
    }


def bench_tenant():
    from django_tenants.utils import schema_context

    from conversations.models import Application
    from conversations.services import application_create, chat_create, creations_persist
    from tenants.models import Tenant
    from tenants.services import tenant_create

    tenant = Tenant.objects.filter(schema_name=SLUG).first() or tenant_create(
        name="Bench", slug=SLUG, admin_email="admin@bench.test", admin_password="bench-password-123"
    )
    with schema_context(SLUG):
        application = Application.objects.filter(name="create-api").first() or application_create(name="create-api")
        if not application.chats.exists():
            chat_create(application=application)
            creations_persist(batch_size=1000)
    return tenant, application


def _process_trees_cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and all its descendants, ended ones included (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {}
    for name, root in roots.items():
        total, stack = 0, [root]
        while stack:
            pid = stack.pop()
            stack += children.get(pid, [])
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            # user + system, and that of its children that ended (PostgreSQL's backends, restarted workers)
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        totals[name] = total / ticks
    return totals


def _service_pids() -> dict[str, int]:
    """PostgreSQL's postmaster and redis-server of this run, found by the ports in DATABASE_URL / REDIS_URL,
    and RabbitMQ's VM (its pid file)."""
    from urllib.parse import urlsplit

    ports = {"postgres": str(urlsplit(os.environ["DATABASE_URL"]).port), "redis": str(urlsplit(os.environ["REDIS_URL"]).port)}
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # redis-server rewrites its title into one string: "redis-server 127.0.0.1:<port>"
        words = " ".join(word.decode(errors="replace") for word in command).split()
        if words and words[0].endswith("redis-server") and any(word.endswith(f":{ports['redis']}") for word in words):
            found["redis"] = int(entry)
        elif words and words[0].endswith("/postgres") and "-p" in words and words[words.index("-p") + 1] == ports["postgres"]:
            found["postgres"] = int(entry)
    # The broker's Erlang VM, from the pid file bench/run's RabbitMQ node writes.
    pid_file = os.environ.get("SOCIOMILE_RABBITMQ_PID_FILE")
    if pid_file and Path(pid_file).is_file():
        found["rabbitmq"] = int(Path(pid_file).read_text().strip())
    return found


def scenario_create_api(args, processes: Processes) -> dict:
    """Ping and create alternate for `--rounds` rounds (a load spike on a shared machine then hits one round,
    not one whole endpoint); req/s and latencies are medians over the rounds. Also the CPU each endpoint costs
    per request in every process of the stack (web, worker, PostgreSQL, Redis), which moves much less with
    the machine's load than throughput does."""
    _, application = bench_tenant()
    url = start_web(processes, workers=args.web_workers, threads=args.web_threads)
    host = f"{SLUG}.localhost"
    start_worker(processes, concurrency=2, log_dir=processes.log_dir)
    # The postmaster as PostgreSQL itself names it (the parent of our backend): the command line it shows
    # need not carry the port.
    services = {**_service_pids(), "postgres": _postmaster_pid()}
    roots = {"web": processes.running["web"].pid, "worker": processes.running["worker"].pid, **services}
    endpoints = {
        "trivial_endpoint": {"url": f"{url}/bench/ping"},
        # A DRF view shaped like the create with nothing to do: how much of the ratio DRF alone takes.
        "drf_floor": {"url": f"{url}/bench/drf-floor", "method": "POST", "body": '{"body": "hello from wrk"}'},
        # The create's own work in a plain Django view: how much of the ratio the create's work alone takes.
        "plain_create": {"url": f"{url}/bench/plain-create/{application.token}/1", "method": "POST",
                         "body": '{"body": "hello from wrk"}'},
        "message_create": {"url": f"{url}/api/applications/{application.token}/chats/1/messages", "method": "POST",
                           "body": '{"body": "hello from wrk"}'},
    }  # fmt: skip
    # warm-up: connections, caches, imports in every gunicorn worker
    for endpoint in endpoints.values():
        wrk(host=host, seconds=2, connections=args.connections, **endpoint)
    runs = {key: [] for key in endpoints}
    cpu = {key: dict.fromkeys(roots, 0.0) for key in endpoints}
    for _ in range(args.rounds):
        for key, endpoint in endpoints.items():
            before = _process_trees_cpu_seconds(roots)
            run = wrk(host=host, seconds=args.seconds, connections=args.connections, **endpoint)
            after = _process_trees_cpu_seconds(roots)
            runs[key].append(run)
            for name in roots:
                cpu[key][name] += after[name] - before[name]
    processes.stop("web")
    processes.stop("worker")
    summary = {key: _wrk_median(key_runs) for key, key_runs in runs.items()}
    cpu_ms = {}
    for key, key_runs in runs.items():
        requests = sum(run["requests"] for run in key_runs)
        cpu_ms[key] = {name: round(1000 * seconds / requests, 3) for name, seconds in cpu[key].items()}
        cpu_ms[key]["all"] = round(sum(cpu_ms[key].values()), 3)
    return {
        **summary,
        "throughput_ratio": round(summary["message_create"]["requests_per_second"] / summary["trivial_endpoint"]["requests_per_second"], 3),
        "round_ratios": [round(c["requests_per_second"] / t["requests_per_second"], 3)
                         for t, c in zip(runs["trivial_endpoint"], runs["message_create"])],
        "drf_floor_ratio": round(summary["drf_floor"]["requests_per_second"] / summary["trivial_endpoint"]["requests_per_second"], 3),
        "ratio_to_drf_floor": round(summary["message_create"]["requests_per_second"] / summary["drf_floor"]["requests_per_second"], 3),
        "plain_create_ratio": round(summary["plain_create"]["requests_per_second"] / summary["trivial_endpoint"]["requests_per_second"], 3),
        "rounds": runs,
        "cpu_ms_per_request": cpu_ms,
        "cpu_ratio": round(cpu_ms["trivial_endpoint"]["all"] / cpu_ms["message_create"]["all"], 3),
        "drf_floor_cpu_ratio": round(cpu_ms["trivial_endpoint"]["all"] / cpu_ms["drf_floor"]["all"], 3),
        "plain_create_cpu_ratio": round(cpu_ms["trivial_endpoint"]["all"] / cpu_ms["plain_create"]["all"], 3),
        "targets": {"throughput_ratio": ">= 0.6", "message_create.p99_ms": "<= 50"},
    }  # fmt: skip


def _wrk_median(runs: list[dict]) -> dict:
    return {
        **{key: _median([run[key] for run in runs]) for key in ("requests_per_second", "p50_ms", "p99_ms")},
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "connections": runs[0]["connections"],
        "seconds": runs[0]["seconds"],
        "rounds": len(runs),
    }


def scenario_drain(args, processes: Processes) -> dict:
    import psycopg
    from django.conf import settings
    from django.db import connection
    from django_tenants.utils import schema_context

    from conversations import creations, services
    from conversations.models import Message
    from conversations.services import application_create, chat_create, creations_persist

    bench_tenant()
    with schema_context(SLUG):
        application = application_create(name=f"drain-{time.time_ns()}")
        chat_create(application=application)
        creations_persist(batch_size=1000)
        # queue N message creations with no drain scheduled: the workers start once all are queued
        original = services._drain_schedule
        services._drain_schedule = lambda: None
        try:
            for index in range(args.messages):
                services.message_create(application=application, chat_number=1, body=f"message {index} " + "x" * 40)
        finally:
            services._drain_schedule = original
        assert creations.pending_count() == args.messages
        chat_id = application.chats.get(number=1).id

    start_worker(processes, concurrency=args.worker_concurrency, log_dir=processes.log_dir)
    from conversations.tasks import creations_persist_task

    started = time.perf_counter()
    with schema_context(SLUG):
        creations_persist_task.delay()

        def drained():
            return creations.pending_count() == 0 and Message.objects.filter(chat_id=chat_id).count() == args.messages

        wait_until(drained, 600, "the drain")
        drain_seconds = time.perf_counter() - started
        numbers = list(Message.objects.filter(chat_id=chat_id).order_by("number").values_list("number", flat=True))
        messages_count = application.chats.get(number=1).messages_count
    processes.stop("worker")

    # Raw baseline: the same rows, one committed INSERT each, one psycopg connection, into a copy of the
    # messages table with the same indexes.
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], autocommit=True
    ) as raw:
        raw.execute(f'SET search_path TO "{SLUG}", public')
        raw.execute("DROP TABLE IF EXISTS bench_raw_message")
        raw.execute("CREATE TABLE bench_raw_message (LIKE conversations_message INCLUDING ALL)")
        now = datetime.now(UTC)
        started = time.perf_counter()
        for index in range(args.raw_rows):
            raw.execute(
                "INSERT INTO bench_raw_message (chat_id, number, body, sender, created_at, updated_at) "
                "VALUES (%s, %s, %s, 'customer', %s, %s)",
                (chat_id, index + 1, f"message {index} " + "x" * 40, now, now),
            )
        raw_seconds = time.perf_counter() - started
        raw.execute("DROP TABLE bench_raw_message")
    connection.close()

    drain_rate = args.messages / drain_seconds
    raw_rate = args.raw_rows / raw_seconds
    return {
        "messages": args.messages,
        "drain_seconds": round(drain_seconds, 3),
        "drain_messages_per_second": round(drain_rate),
        "raw_rows": args.raw_rows,
        "raw_single_row_inserts_per_second": round(raw_rate),
        "ratio_to_raw": round(drain_rate / raw_rate, 2),
        "lost": args.messages - len(numbers),
        "duplicated": len(numbers) - len(set(numbers)),
        "numbers_contiguous": numbers == list(range(1, args.messages + 1)),
        "messages_count_exact": messages_count == args.messages,
        "worker_concurrency": args.worker_concurrency,
        "targets": {"ratio_to_raw": ">= 1.0", "lost": "0", "duplicated": "0"},
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _median(values: list[float]) -> float:
    return _percentile(values, 0.5)


def _waiting_chats_insert(cursor, *, application_id: int, count: int) -> None:
    """`count` waiting chats for the application, numbered after its last, created now (one statement)."""
    cursor.execute(
        """
        INSERT INTO conversations_chat (application_id, number, status, messages_count, created_at, updated_at)
        SELECT %s, base.n + g, 'waiting', 0, clock_timestamp(), clock_timestamp()
        FROM generate_series(1, %s) AS g, (SELECT coalesce(max(number), 0) AS n FROM conversations_chat
                                          WHERE application_id = %s) AS base
        """,
        [application_id, count, application_id],
    )


def scenario_assignment(args, processes: Processes) -> dict:
    import bisect
    import threading

    from django.db import connection
    from django_tenants.utils import schema_context

    from agents.models import Agent
    from agents.services import agent_create, assignment_run
    from conversations.models import Chat
    from conversations.services import application_create
    from routing.models import Team
    from routing.services import application_team_set, team_create

    bench_tenant()
    with schema_context(SLUG):
        # K online agents with room for every chat of the run: capacity never runs out.
        run_id = time.time_ns()
        Agent.objects.filter(is_online=True).update(is_online=False)
        for index in range(args.assign_agents):
            agent_create(email=f"agent{index}-{run_id}@bench.test", password="bench-password-123",
                         is_online=True, max_customers=10 * (args.assign_chats + args.assign_arrivals))  # fmt: skip
        application = application_create(name=f"assignment-{run_id}")
        assignment_run()  # anything left waiting from earlier scenarios

        # (a) Bulk: N chats already waiting, one assignment_run (as a worker runs it) assigns them all.
        with connection.cursor() as cursor:
            _waiting_chats_insert(cursor, application_id=application.id, count=args.assign_chats)
            cursor.execute("ANALYZE conversations_chat")
        started = time.perf_counter()
        bulk_assigned = assignment_run()
        bulk_seconds = time.perf_counter() - started

        # (b) Arrivals: chats arrive at a steady rate (a batch every 10 ms) while an assigner loops
        # assignment_run back to back, as a worker kept busy by the product's scheduling would; latency is
        # each chat's created_at -> assigned_at as written in its row.
        def arrivals(applications: list) -> dict:
            per_tick = max(1, args.assign_rate // 100)
            total = per_tick * (args.assign_arrivals // per_tick)
            done = threading.Event()
            runs = []

            def assigner():
                with schema_context(SLUG):
                    try:
                        while not done.is_set() or Chat.objects.filter(application__in=applications, status="waiting").exists():
                            started_run = datetime.now(UTC)
                            count = assignment_run()
                            runs.append((started_run, datetime.now(UTC), count))
                    finally:
                        connection.close()

            thread = threading.Thread(target=assigner)
            thread.start()
            started = time.perf_counter()
            with connection.cursor() as cursor:
                for tick in range(total // per_tick):
                    # each tick's chats to the next application in turn (with teams: the next team's)
                    _waiting_chats_insert(cursor, application_id=applications[tick % len(applications)].id, count=per_tick)
                    pause = started + (tick + 1) * 0.01 - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
            arrival_seconds = time.perf_counter() - started
            done.set()
            thread.join()
            # A run stamps assigned_at from the clock it reads after reading each batch of the queue (plus a
            # microsecond per chat), and its assignments become visible when it commits: the latency counted is
            # created_at -> the commit of the run that assigned the chat (the run whose start is the last one at
            # or before its assigned_at).
            rows = list(Chat.objects.filter(application__in=applications).values_list("created_at", "assigned_at"))
            starts = [start for start, _, _ in runs]
            latencies, stamped_before_created = [], 0
            for created, assigned in rows:
                if assigned is None:
                    continue
                stamped_before_created += assigned < created
                run_end = runs[max(0, bisect.bisect_right(starts, assigned) - 1)][1]
                latencies.append((run_end - created).total_seconds() * 1000)
            busy = [(end - start).total_seconds() * 1000 for start, end, count in runs if count]
            return {
                "chats": total,
                "offered_rate_per_second": round(total / arrival_seconds),
                "assigned": len(latencies),
                "p50_ms": round(_percentile(latencies, 0.5), 1),
                "p99_ms": round(_percentile(latencies, 0.99), 1),
                "max_ms": round(max(latencies), 1) if latencies else None,
                "assignment_runs": len(runs),
                "runs_that_assigned": len(busy),
                "median_assigning_run_ms": round(_median(busy), 1),
                "max_assigning_run_ms": round(max(busy), 1) if busy else None,
                "assigned_at_before_created_at": stamped_before_created,
            }

        unrouted = arrivals([application_create(name=f"arrival-{run_id}")])

        # (c) The same arrivals routed to teams (issue 24): the run's agents split over 1 team, then over
        # `--assign-teams` teams, one application each, chats spread over them in turn. Target: the p99 with 10
        # teams within 1.5x of one team's.
        agents = list(Agent.objects.filter(is_online=True).order_by("user_id"))
        by_teams = {}
        for team_count in sorted({1, args.assign_teams}):
            applications = []
            for index in range(team_count):
                application = application_create(name=f"teams{team_count}-{index}-{run_id}")
                team = team_create(name=f"bench-{team_count}-{index}-{run_id}", agents=agents[index::team_count])
                application_team_set(application=application, team=team)
                applications.append(application)
            by_teams[str(team_count)] = arrivals(applications)
        Team.objects.all().delete()  # later scenarios and runs see no team
        Agent.objects.filter(is_online=True).update(is_online=False)
    connection.close()
    one, many = by_teams["1"]["p99_ms"], by_teams[str(args.assign_teams)]["p99_ms"]
    return {
        "agents": args.assign_agents,
        "bulk": {
            "waiting_chats": args.assign_chats,
            "assigned": bulk_assigned,
            "seconds": round(bulk_seconds, 3),
            "assignments_per_second": round(bulk_assigned / bulk_seconds),
        },
        "arrivals": unrouted,
        "teams": {"counts": by_teams, "p99_ratio_many_to_one": round(many / one, 2) if one else None, "many": args.assign_teams},
        "targets": {
            "bulk.assignments_per_second": ">= 1000",
            "arrivals.p99_ms": "<= 100",
            "teams.p99_ratio_many_to_one": "<= 1.5",
        },
    }


def _cursor_at(number: int) -> str:
    """The cursor DRF's CursorPagination hands out for the page after message `number` (ordering by number)."""
    import base64
    from urllib.parse import quote

    return quote(base64.b64encode(f"p={number}".encode()).decode())


def _messages_fill(cursor, *, chat_id: int, upto: int) -> float:
    """Adds messages to the chat until it holds `upto` (1% mention a refund); returns the seconds taken."""
    started = time.perf_counter()
    cursor.execute("SELECT coalesce(max(number), 0) FROM conversations_message WHERE chat_id = %s", [chat_id])
    have = cursor.fetchone()[0]
    cursor.execute(
        """
        INSERT INTO conversations_message (chat_id, number, body, sender, created_at, updated_at)
        SELECT %s, g, 'customer message ' || g || ' about order ' || md5(g::text)
                      || CASE WHEN g %% 100 = 0 THEN ' please refund it' ELSE '' END,
               'customer', now(), now()
        FROM generate_series(%s, %s) AS g
        """,
        [chat_id, have + 1, upto],
    )
    cursor.execute("UPDATE conversations_chat SET messages_count = %s WHERE id = %s", [upto, chat_id])
    cursor.execute("VACUUM ANALYZE conversations_message")
    cursor.execute("VACUUM ANALYZE conversations_chat")
    _database_settle()
    return time.perf_counter() - started


def _database_settle(timeout: float = 300, *, catalogs: bool = False) -> None:
    """Lets PostgreSQL finish what a bulk fill leaves behind before anything is measured: autovacuum workers
    still at work on the new rows, and the fill's dirty buffers (a checkpoint writes them now; otherwise the
    checkpointer flushes a million rows' pages during the measured runs). CHECKPOINT needs a superuser: the
    bench's own cluster (bench/run) trusts `postgres` on loopback.

    `catalogs`: after a bulk build of schemas, also VACUUM ANALYZE the system catalogs it grew, as autovacuum
    would do over the next minutes: left to autovacuum, that work landed in the idle window measured next
    (tenant_scale at 100 tenants: PostgreSQL 9 % of a core "idle", its autovacuum workers on pg_attribute,
    pg_class and pg_constraint) and was charged to idle tenants rather than to their creation."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user="postgres", autocommit=True) as admin:
        if catalogs:
            tables = admin.execute(
                "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_sys_tables "
                "WHERE schemaname = 'pg_catalog' AND n_dead_tup + n_mod_since_analyze > 0"
            ).fetchall()
            for (table,) in tables:
                admin.execute(f"VACUUM (ANALYZE) {table}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
            if busy.fetchone()[0] == 0:
                break
            time.sleep(1)
        admin.execute("CHECKPOINT")


def _search_plans(chat, *, after: int) -> list[str]:
    """EXPLAIN ANALYZE of every query one search page makes (the API's selector, as it runs), one text each."""
    from django.db import connection

    from conversations.selectors import message_search_page

    queries = []

    def capture(execute, sql, params, many, context):
        queries.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        message_search_page(chat=chat, query="refund", after=after, limit=50)
    plans = []
    with connection.cursor() as cursor:
        for sql, params in queries:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return plans


def _process_cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if with_reaped_children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    children.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return children


def _server_cpu_seconds(*, web_pid: int, postmaster_pid: int) -> float:
    """CPU seconds used so far by the web server (gunicorn and its workers) and PostgreSQL (the postmaster, its
    live children and, through the postmaster's counters, the ones that ended). A difference of two readings is
    the CPU a run cost the server: unlike latency, hardly moved by other work on the machine."""
    total = _process_cpu_seconds(postmaster_pid, with_reaped_children=True)
    total += sum(_process_cpu_seconds(pid) for pid in _child_pids(postmaster_pid))
    return total + sum(_process_cpu_seconds(pid) for pid in [web_pid, *_child_pids(web_pid)])


def _postmaster_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
        # Read while the backend lives: once the connection closes, it exits.
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    connection.close()
    return postmaster


def _read_tenant(size: int):
    """A tenant of its own for one size of the read path, holding one new chat of `size` messages: the issue's
    figure is 10k vs 1M messages in a tenant."""
    from django.db import connection
    from django_tenants.utils import schema_context

    from conversations.models import Chat
    from conversations.services import application_create, chat_create, creations_persist
    from tenants.models import Tenant
    from tenants.services import tenant_create

    slug = f"read{size}"
    if not Tenant.objects.filter(schema_name=slug).exists():
        tenant_create(name=slug, slug=slug, admin_email=f"admin@{slug}.test", admin_password="bench-password-123")
    with schema_context(slug):
        application = application_create(name="read-path")
        chat_create(application=application)
        creations_persist(batch_size=1000)
        chat = Chat.objects.get(application=application, number=1)
        with connection.cursor() as cursor:
            fill_seconds = _messages_fill(cursor, chat_id=chat.id, upto=size)
    return slug, application, chat, fill_seconds


def scenario_read_path(args, processes: Processes) -> dict:
    from django.db import connection
    from django_tenants.utils import schema_context

    tenants = {size: _read_tenant(size) for size in args.read_sizes}
    levels, endpoints = {}, {}
    for size, (slug, application, chat, fill_seconds) in tenants.items():
        deep = int(size * 0.9)  # a page 90% of the way into the chat
        # 90% into 10,000 messages only 10 matches of `refund` remain, against a full page at 1M: this cursor leaves
        # 6,000 numbers (about 60 matches) at every size, so both sides of its ratio serve a page of 50.
        deep_full = max(0, size - 6_000)
        with schema_context(slug), connection.cursor() as cursor:
            # The plans of the search API's own queries (first and deep page), beside the one query the API made
            # before windowed search (the whole chat after the cursor, `body ILIKE`, ordered and limited).
            search_plan = _search_plans(chat, after=0)
            search_deep_plan = _search_plans(chat, after=deep)
            cursor.execute(
                "EXPLAIN ANALYZE SELECT * FROM conversations_message WHERE chat_id = %s AND body ILIKE %s "
                "ORDER BY number LIMIT 51",
                [chat.id, "%refund%"],
            )
            ilike_plan = [row[0] for row in cursor.fetchall()]
        base = f"/api/applications/{application.token}/chats/1/messages"
        endpoints[size] = {
            "list_first_page": f"{base}",
            "list_deep_page": f"{base}?cursor={_cursor_at(deep)}",
            "search": f"{base}/search?q=refund",
            "search_deep_page": f"{base}/search?q=refund&cursor={_cursor_at(deep)}",
            "search_deep_full_page": f"{base}/search?q=refund&cursor={_cursor_at(deep_full)}",
        }
        levels[str(size)] = {
            "tenant": slug,
            "fill_seconds": round(fill_seconds, 1),
            "search_plan": search_plan,
            "search_deep_plan": search_deep_plan,
            "ilike_plan": ilike_plan,
        }
    postmaster = _postmaster_pid()
    _database_settle()  # the last fill's checkpoint happened before the other tenants' plans: once more
    url = start_web(processes, workers=args.web_workers, threads=args.web_threads)
    web = processes.running["web"].pid

    def run(size: int, name: str, seconds: int) -> dict:
        host = f"{tenants[size][0]}.localhost"
        cpu_before = _server_cpu_seconds(web_pid=web, postmaster_pid=postmaster)
        result = wrk(url=url + endpoints[size][name], host=host, seconds=seconds, connections=args.read_connections)
        cpu = _server_cpu_seconds(web_pid=web, postmaster_pid=postmaster) - cpu_before
        requests = result["requests_per_second"] * result["seconds"]
        return {**result, "server_cpu_ms_per_request": round(1000 * cpu / requests, 2) if requests else None}

    names = ("list_first_page", "list_deep_page", "search", "search_deep_page", "search_deep_full_page")
    for size in args.read_sizes:  # warm-up: connections, caches, imports in every gunicorn worker, the pages read
        for name in names:
            run(size, name, args.read_warmup_seconds)
    # The sizes side by side: each round runs every endpoint at each size back to back, so that a busy moment of
    # the shared machine weighs on both sides of a ratio rather than on one; the figure is each endpoint's run
    # with the median p99 over the rounds.
    runs = {(size, name): [] for size in args.read_sizes for name in names}
    for _ in range(args.read_rounds):
        for name in names:
            for size in args.read_sizes:
                runs[size, name].append(run(size, name, args.seconds))
    for (size, name), results in runs.items():
        levels[str(size)][name] = {
            **_median_run(results),
            "p99_ms_of_each_run": [result["p99_ms"] for result in results],
            "median_server_cpu_ms_per_request": _median([result["server_cpu_ms_per_request"] for result in results]),
        }
    processes.stop("web")
    small, large = (levels[str(size)] for size in (min(args.read_sizes), max(args.read_sizes)))
    ratios = {name: round(large[name]["p99_ms"] / small[name]["p99_ms"], 2) for name in names}
    cpu_ratios = {
        name: round(large[name]["median_server_cpu_ms_per_request"] / small[name]["median_server_cpu_ms_per_request"], 2)
        for name in names
    }
    return {
        "sizes": args.read_sizes,
        "rounds": args.read_rounds,
        "levels": levels,
        "p99_ratio_largest_to_smallest": ratios,
        "server_cpu_per_request_ratio_largest_to_smallest": cpu_ratios,
        "targets": {"p99_ratio_largest_to_smallest": "<= 1.5"},
    }


def _median_run(results: list[dict]) -> dict:
    """The run whose p99 is the median of the runs' (the lower middle one for an even count)."""
    return sorted(results, key=lambda result: result["p99_ms"])[(len(results) - 1) // 2]


def scenario_provisioning(args, processes: Processes) -> dict:
    from django.conf import settings
    from django.contrib.auth.hashers import make_password
    from django.db import connection, transaction
    from django_tenants.clone import CloneSchema

    from tenants.models import Tenant
    from tenants.schemas import schema_clone
    from tenants.services import tenant_create

    template = settings.TENANT_TEMPLATE_SCHEMA

    def count() -> int:
        return Tenant.objects.exclude(schema_name="public").count()

    def create(prefix: str) -> float:
        slug = f"{prefix}{time.time_ns() % 10**12}"
        started = time.perf_counter()
        tenant_create(name=slug, slug=slug, admin_email=f"admin@{slug}.test", admin_password="bench-password-123")
        return time.perf_counter() - started

    def backend_cpu() -> float:
        # CPU seconds PostgreSQL's backend for our connection has used (it runs on this machine): unlike
        # wall time, hardly moved by other processes competing for the cores.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rolled_back(copy) -> tuple[float, float]:
        # One part of a creation alone, in a transaction rolled back afterwards (nothing is left of it):
        # (wall seconds, PostgreSQL CPU seconds).
        cpu_before = backend_cpu()
        started = time.perf_counter()
        with transaction.atomic():
            copy()
            transaction.set_rollback(True)
        return time.perf_counter() - started, backend_cpu() - cpu_before

    fills = []  # (tenants existing before, seconds) for every creation made to reach the levels
    levels = {}
    tenant_levels = args.tenant_levels or [10, 200]
    for level in sorted(tenant_levels):
        while count() < level:
            before = count()
            fills.append((before, create("fill")))
        existing = count()
        timings = [create("prov") for _ in range(args.tenant_samples)]
        # Where a creation's time goes, measured right after it at the same level: the schema copy alone,
        # django-tenants' clone_schema (the copy we had; its catalog queries grow with the tenants), and
        # the admin's Argon2 hash. The rest is rows, the commit, the beat entry and the queue broadcast.
        copies = [rolled_back(lambda: schema_clone(source=template, target="bench_copy")) for _ in range(args.tenant_samples)]
        old_copies = []
        for _ in range(args.tenant_samples):
            old_copies.append(rolled_back(lambda: CloneSchema().clone_schema(template, "bench_old_copy", "DATA")))
            connection.set_schema_to_public()
        hashes = []
        for _ in range(args.tenant_samples):
            started = time.perf_counter()
            make_password("bench-password-123")
            hashes.append(time.perf_counter() - started)
        with connection.cursor() as cursor:
            cursor.execute("SELECT (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_attribute)")
            relations, attributes = cursor.fetchone()
        levels[str(level)] = {
            "existing_before": existing,
            "pg_class_rows": relations,
            "pg_attribute_rows": attributes,
            "seconds": [round(t, 3) for t in timings],
            "median_seconds": round(_median(timings), 3),
            "schema_copy_median_seconds": round(_median([wall for wall, _ in copies]), 3),
            "schema_copy_median_postgres_cpu_seconds": round(_median([cpu for _, cpu in copies]), 3),
            "django_tenants_clone_schema_median_seconds": round(_median([wall for wall, _ in old_copies]), 3),
            "django_tenants_clone_schema_median_postgres_cpu_seconds": round(_median([cpu for _, cpu in old_copies]), 3),
            "password_hash_median_seconds": round(_median(hashes), 3),
        }
    connection.close()
    first, last = (levels[str(level)]["median_seconds"] for level in (min(tenant_levels), max(tenant_levels)))
    first_copy, last_copy = (levels[str(level)]["schema_copy_median_postgres_cpu_seconds"]
                             for level in (min(tenant_levels), max(tenant_levels)))  # fmt: skip
    tail = [seconds for _, seconds in fills[-10:]]
    head = [seconds for _, seconds in fills[:10]]
    return {
        "levels": levels,
        "ratio_largest_to_smallest": round(last / first, 2),
        "schema_copy_postgres_cpu_ratio_largest_to_smallest": round(last_copy / first_copy, 2) if first_copy else None,
        "fill_creations": len(fills),
        "fill_seconds_by_existing": [[before, round(seconds, 2)] for before, seconds in fills],
        "fill_median_first_10_seconds": round(_median(head), 3) if head else None,
        "fill_median_last_10_seconds": round(_median(tail), 3) if tail else None,
        "targets": {"median_seconds": "<= 1.0", "ratio_largest_to_smallest": "flat (~1.0)"},
    }


def _cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (its threads included); with `children`, also of its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _outbound_cpu(*, receivers: list[int], postmaster: int, redis: int) -> dict[str, float]:
    """CPU seconds so far of each party of the outbound scenario: this process (the sender), the receiver
    processes, our PostgreSQL cluster (the postmaster, its live backends and the ones that exited: reaped
    children count in the postmaster's cutime) and our Redis. Other helpers' processes are not counted."""
    return {
        "sender": _cpu_seconds(os.getpid()),
        "receiver": sum(_cpu_seconds(pid) for pid in receivers),
        "postgres": _cpu_seconds(postmaster, children=True) + sum(_cpu_seconds(pid) for pid in _children_of(postmaster)),
        "redis": _cpu_seconds(redis),
    }


def scenario_outbound(args, processes: Processes) -> dict:
    import threading
    from collections import Counter

    from django.conf import settings
    from django.db import connection
    from django_tenants.utils import schema_context

    from core.redis import get_redis
    from scheduler.models import OutboundMessage, SchedulerSetting
    from scheduler.services import outbound_send_due, scheduler_ensure

    # The receiver runs as processes of its own (bench/receiver.py), sharing one port: inside this process
    # it shared the GIL with the runs it was timing.
    receivers = 2
    port = free_port()
    webhook_url = f"http://127.0.0.1:{port}/hook"
    keys_dir = Path(tempfile.mkdtemp(prefix="sociomile-bench-receiver-"))

    def receivers_start(round_name: str) -> list[Path]:
        paths = [keys_dir / f"{round_name}-{index}.keys" for index in range(receivers)]
        for index, path in enumerate(paths):
            processes.start(f"receiver-{index}", [sys.executable, "-m", "bench.receiver", str(port), str(path)])
        wait_until(lambda: all(Path(str(path) + ".tmp").exists() for path in paths), 30, "the receivers")
        return paths

    def receiver_pids() -> list[int]:
        return [processes.running[f"receiver-{index}"].pid for index in range(receivers)]

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")  # our backend's parent is our cluster's postmaster
        postmaster = int(Path(f"/proc/{cursor.fetchone()[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    redis_pid = int(get_redis().info("server")["process_id"])

    def cpu_now() -> dict[str, float]:
        return _outbound_cpu(receivers=receiver_pids(), postmaster=postmaster, redis=redis_pid)

    def cpu_since(before: dict[str, float]) -> dict[str, float]:
        return {party: round(seconds - before[party], 2) for party, seconds in cpu_now().items()}

    def receivers_stop(paths: list[Path]) -> Counter:
        for index in range(receivers):
            processes.stop(f"receiver-{index}")
        hits: Counter = Counter()
        for path in paths:
            hits.update(path.read_text().split())
        return hits

    def bare_posts(count: int) -> float:
        """POSTs/s of the same requests through the product's own HTTP code (`_post` on the run's pool), from the
        same number of threads, with no database or Redis at all: what the machine allows right now."""
        from concurrent.futures import ThreadPoolExecutor

        from core.transport import http_target
        from scheduler.services.run import _post

        concurrency = settings.OUTBOUND_SEND_CONCURRENCY
        target = http_target(concurrency=concurrency, url=webhook_url, user_agent="sociomile-outbound")
        setting = SchedulerSetting(webhook_url=webhook_url, auth_key="")  # never saved

        def post(index: int) -> None:
            message = OutboundMessage(id=f"00000000-0000-0000-0000-{index:012d}", to="+628120000000", content=f"bare {index}")
            assert _post(target=target, setting=setting, message=message).status == "sent"

        paths = receivers_start("bare")
        cpu = cpu_now()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(post, range(count)))
        seconds = time.perf_counter() - started
        bare_cpu.append(cpu_since(cpu))
        receivers_stop(paths)
        target.manager.clear()
        return round(count / seconds)

    bench_tenant()
    results = {}
    baseline = []
    bare_cpu = []  # CPU seconds of each party during each bare-POST round
    try:
        baseline.append(bare_posts(args.outbound_messages))
        for runs in args.outbound_runs:
            with schema_context(SLUG):
                scheduler_ensure()
                OutboundMessage.objects.all().delete()
                # Past the product's batch cap (OUTBOUND_BATCH_SIZE_MAX): written directly, as the bench's own setting.
                batch = -(-args.outbound_messages // runs)
                SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).update(
                    webhook_url=webhook_url, batch_size=min(batch, 32767), running=True
                )
                OutboundMessage.objects.bulk_create(
                    [OutboundMessage(to=f"+62812{index:07d}", content=f"outbound {index}") for index in range(args.outbound_messages)],
                    batch_size=5000,
                )  # fmt: skip
            paths = receivers_start(f"runs-{runs}")
            summaries = []

            def one_run():
                with schema_context(SLUG):
                    try:
                        summaries.append(outbound_send_due())
                    finally:
                        connection.close()

            threads = [threading.Thread(target=one_run) for _ in range(runs)]
            cpu = cpu_now()
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            cpu = cpu_since(cpu)
            hits = receivers_stop(paths)
            with schema_context(SLUG):
                sent = OutboundMessage.objects.filter(status=OutboundMessage.Status.SENT).count()
                ids = {str(i) for i in OutboundMessage.objects.values_list("id", flat=True)}
            baseline.append(bare_posts(args.outbound_messages))
            results[str(runs)] = {
                "concurrent_runs": runs,
                "batch_size": batch,
                "send_concurrency_per_run": settings.OUTBOUND_SEND_CONCURRENCY,
                "receiver_processes": receivers,
                "messages": args.outbound_messages,
                "sent": sent,
                "seconds": round(seconds, 3),
                "sends_per_second": round(sent / seconds),
                "receiver_hits": sum(hits.values()),
                "duplicates": sum(count - 1 for count in hits.values() if count > 1),
                "unknown_keys": len(set(hits) - ids),
                "never_received": len(ids - set(hits)),
                "cpu_seconds": cpu,
                "cpu_ms_per_send": {party: round(1000 * seconds / max(sent, 1), 3) for party, seconds in cpu.items()},
            }
        # Where a single run spends its time: one more run of a few hundred messages under cProfile.
        import cProfile
        import io
        import pstats

        with schema_context(SLUG):
            OutboundMessage.objects.all().delete()
            SchedulerSetting.objects.filter(id=SchedulerSetting.SINGLETON_ID).update(batch_size=300)
            OutboundMessage.objects.bulk_create([OutboundMessage(to=f"+62813{i:07d}", content=f"p {i}") for i in range(300)])
            paths = receivers_start("profile")
            profiler = cProfile.Profile()  # the run's own thread: its waits on the wave's requests show as such
            profiler.enable()
            outbound_send_due()
            profiler.disable()
            receivers_stop(paths)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        profile = [line for line in text.getvalue().splitlines() if line.strip()][-26:]
    finally:
        for index in range(receivers):
            processes.stop(f"receiver-{index}")
        connection.close()
    for index, result in enumerate(results.values()):
        # The same POSTs without the product, measured just before and just after the round: the ratio is the
        # figure that survives a busy machine.
        result["bare_posts_per_second_around"] = baseline[index : index + 2]
        result["ratio_to_bare_posts"] = round(result["sends_per_second"] / _median(baseline[index : index + 2]), 2)
        result["bare_cpu_ms_per_post_before"] = {
            party: round(1000 * seconds / args.outbound_messages, 3) for party, seconds in bare_cpu[index].items()
        }
    return {"runs": results, "bare_posts_per_second": baseline, "profile_single_run_300_by_cumulative": profile,
            "targets": {"sends_per_second": ">= 500", "duplicates": "0"}}  # fmt: skip


SCENARIOS = {
    "create_api": scenario_create_api,
    "drain": scenario_drain,
    "assignment": scenario_assignment,
    "read_path": scenario_read_path,
    "provisioning": scenario_provisioning,
    "outbound": scenario_outbound,
    "tenant_scale": tenant_scale.scenario_tenant_scale,
    "events": events_scenario.scenario_events,
    "reports": reports.scenario_reports,
    "stream": stream_scenario.scenario_stream,
}


CREATE_API_ROWS = (
    ("GET /bench/ping", "trivial_endpoint"),
    ("POST /bench/drf-floor", "drf_floor"),
    ("POST /bench/plain-create/...", "plain_create"),
    ("POST .../messages", "message_create"),
)


def markdown(results: dict) -> str:
    lines = [f"# Benchmark {results['started_at']}", "", f"`{results['command']}` on {results['machine']}", ""]
    if "create_api" in results["scenarios"]:
        r = results["scenarios"]["create_api"]
        lines += [
            "## Message-create API vs the trivial endpoint (wrk, 64 connections)", "",
            "| endpoint | req/s | p50 ms | p99 ms | non-2xx |", "| --- | ---: | ---: | ---: | ---: |",
            *[f"| {name} | {r[key]['requests_per_second']:.0f} | {r[key]['p50_ms']} | {r[key]['p99_ms']} | {r[key]['non_2xx']} |"
              for name, key in CREATE_API_ROWS if key in r],
            "", f"Throughput ratio: **{r['throughput_ratio']}** (target >= 0.6); p99 target <= 50 ms.", "",
        ]  # fmt: skip
        if "drf_floor" in r:
            lines += [
                f"DRF floor (`POST /bench/drf-floor`: a DRF view shaped like the create that does nothing) to ping: "
                f"**{r['drf_floor_ratio']}**; create to the DRF floor: **{r['ratio_to_drf_floor']}**. "
                "No DRF create can beat the first ratio on this server.", "",
            ]
        if "plain_create" in r:
            lines += [
                f"Plain create (`POST /bench/plain-create/...`: the create's own work in a plain Django view, no DRF) to "
                f"ping: **{r['plain_create_ratio']}** (CPU ratio {r['plain_create_cpu_ratio']}): where the create would stand "
                "without DRF's request handling.", "",
            ]
        if "cpu_ms_per_request" in r:
            cpu = r["cpu_ms_per_request"]
            lines += [
                f"Medians of {r['trivial_endpoint']['rounds']} alternating rounds; ratio per round: "
                f"{', '.join(str(ratio) for ratio in r['round_ratios'])}.", "",
                "| CPU ms per request | " + " | ".join(cpu["trivial_endpoint"]) + " |",
                "| --- | " + " | ".join("---:" for _ in cpu["trivial_endpoint"]) + " |",
                *[f"| {name} | " + " | ".join(str(value) for value in cpu[key].values()) + " |"
                  for name, key in CREATE_API_ROWS if key in cpu],
                "", f"CPU ratio (ping / create, whole stack): **{r['cpu_ratio']}**"
                + (f"; ping / DRF floor: **{r['drf_floor_cpu_ratio']}**" if "drf_floor_cpu_ratio" in r else "") + ".", "",
            ]  # fmt: skip
    if "drain" in results["scenarios"]:
        r = results["scenarios"]["drain"]
        lines += [
            "## Drain of queued message creations vs single-row committed INSERTs", "",
            "| measure | value |", "| --- | ---: |",
            f"| queued messages | {r['messages']} |",
            f"| drain time | {r['drain_seconds']} s |",
            f"| drain rate | {r['drain_messages_per_second']} messages/s |",
            f"| raw single-row INSERT rate ({r['raw_rows']} rows) | {r['raw_single_row_inserts_per_second']} rows/s |",
            f"| ratio | **{r['ratio_to_raw']}** (target >= 1.0) |",
            f"| lost / duplicated | {r['lost']} / {r['duplicated']} |",
            f"| numbers 1..N contiguous, messages_count exact | {r['numbers_contiguous']}, {r['messages_count_exact']} |", "",
        ]  # fmt: skip
    if "assignment" in results["scenarios"]:
        r = results["scenarios"]["assignment"]
        b, a = r["bulk"], r["arrivals"]
        lines += [
            f"## Assignment, one tenant, {r['agents']} online agents with room to spare", "",
            "| measure | value | target |", "| --- | ---: | ---: |",
            f"| bulk: {b['waiting_chats']} waiting chats, one `assignment_run` | {b['assignments_per_second']} assignments/s ({b['seconds']} s) | >= 1000/s |",
            f"| arrivals: {a['chats']} chats at {a['offered_rate_per_second']}/s, an assigner looping `assignment_run` | p50 {a['p50_ms']} ms, **p99 {a['p99_ms']} ms**, max {a['max_ms']} ms | p99 <= 100 ms |",
            f"| assigning runs: count, median / max duration | {a['runs_that_assigned']}, {a['median_assigning_run_ms']} / {a['max_assigning_run_ms']} ms | |",
            f"| rows whose assigned_at precedes created_at | {a['assigned_at_before_created_at']} of {a['assigned']} | |", "",
            "Arrival latency is created_at -> commit of the run that assigned the chat (assigned_at is stamped "
            "when the run has read the chat, before its commit, so it is not the moment the assignment became visible).", "",
        ]  # fmt: skip
        if "teams" in r:
            t = r["teams"]
            lines += [
                "Routed to teams (the same arrivals, the agents split over the teams, one application per team):", "",
                "| teams | p50 ms | p99 ms | max ms | assigning runs, median / max ms |", "| ---: | ---: | ---: | ---: | ---: |",
                *[f"| {count} | {x['p50_ms']} | {x['p99_ms']} | {x['max_ms']} | {x['runs_that_assigned']}, "
                  f"{x['median_assigning_run_ms']} / {x['max_assigning_run_ms']} |" for count, x in t["counts"].items()],
                "", f"p99 with {t['many']} teams : one team = **{t['p99_ratio_many_to_one']}** (target <= 1.5)", "",
            ]  # fmt: skip
    if "read_path" in results["scenarios"]:
        r = results["scenarios"]["read_path"]
        names = ("list_first_page", "list_deep_page", "search", "search_deep_page", "search_deep_full_page")
        sizes = [str(size) for size in r["sizes"]]
        lines += [
            f"## Read path: p99 ms by messages in the chat (wrk, {r['levels'][sizes[0]]['list_first_page']['connections']} connections)", "",
            "| request | " + " | ".join(f"{size} msgs p99 (req/s)" for size in sizes) + " | ratio | target | "
            + " | ".join(f"{size}: p99 of each run" for size in sizes) + " |",
            "| --- | " + " | ".join("---:" for _ in sizes) + " | ---: | ---: | " + " | ".join("---" for _ in sizes) + " |",
            *[f"| {name} | " + " | ".join(f"{r['levels'][size][name]['p99_ms']} ({r['levels'][size][name]['requests_per_second']:.0f})" for size in sizes)
              + f" | **{r['p99_ratio_largest_to_smallest'][name]}** | <= 1.5 | "
              + " | ".join(", ".join(str(p) for p in r['levels'][size][name].get('p99_ms_of_each_run', [])) for size in sizes) + " |"
              for name in names],
            "", "Server CPU per request (gunicorn and PostgreSQL processes, median over the runs; what a request costs, "
            "whatever else the machine is doing):", "",
            "| request | " + " | ".join(f"{size} msgs CPU ms" for size in sizes) + " | ratio |",
            "| --- | " + " | ".join("---:" for _ in sizes) + " | ---: |",
            *[f"| {name} | " + " | ".join(str(r['levels'][size][name].get('median_server_cpu_ms_per_request')) for size in sizes)
              + f" | **{r.get('server_cpu_per_request_ratio_largest_to_smallest', {}).get(name)}** |" for name in names],
            "", "Deep pages start 90% of the way into the chat (10 matches of the search remain there at 10k, a full page "
            "at 1M); `search_deep_full_page` starts 6,000 messages before the chat's end, a page of 50 at every size. "
            "Search is `q=refund` (1% of messages). Each endpoint ran "
            f"{r.get('rounds', 1)} times, each round running it at every size back to back (each size is a tenant of its own), "
            "after a checkpoint and a warm-up; a cell is the run with the median p99.", "",
            *[part for size in sizes for part in (
                f"Search plans with {size} messages: each query of the first page, then of the deep page, then the query "
                "the API made before windowed search (the whole chat after the cursor, by `body ILIKE`):", "", "```",
                *[line for plan in r["levels"][size].get("search_plan", []) + r["levels"][size].get("search_deep_plan", [])
                  for line in plan.splitlines()
                  if any(k in line for k in ("Scan", "Filter:", "Index Cond", "Execution", "Planning Time"))],
                *[line for line in r["levels"][size]["ilike_plan"] if any(k in line for k in ("Scan", "Filter:", "Index Cond", "Execution"))],
                "```", "")],
        ]  # fmt: skip
    if "provisioning" in results["scenarios"]:
        r = results["scenarios"]["provisioning"]
        lines += [
            "## Tenant provisioning (`tenant_create`)", "",
            "| tenants existing | creations (s) | median s | target | schema copy s (PostgreSQL CPU s) "
            "| django-tenants clone_schema s (PostgreSQL CPU s) | Argon2 hash s | pg_class rows | pg_attribute rows |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *[f"| {level['existing_before']} | {', '.join(str(t) for t in level['seconds'])} | **{level['median_seconds']}** | <= 1.0 "
              f"| {level['schema_copy_median_seconds']} ({level['schema_copy_median_postgres_cpu_seconds']}) "
              f"| {level['django_tenants_clone_schema_median_seconds']} ({level['django_tenants_clone_schema_median_postgres_cpu_seconds']}) "
              f"| {level['password_hash_median_seconds']} | {level['pg_class_rows']} | {level['pg_attribute_rows']} |"
              for level in r["levels"].values()],
            "", f"Ratio largest/smallest level: **{r['ratio_largest_to_smallest']}** (target: flat); of the schema copy's "
            f"PostgreSQL CPU time: {r['schema_copy_postgres_cpu_ratio_largest_to_smallest']}. Medians of the samples; the "
            "schema copy and clone_schema (the copy provisioning used before) are timed alone in rolled-back "
            "transactions at the same level, and the Argon2 hash alone (a creation overlaps it with the copy). "
            f"Filling creations: {r['fill_creations']}, median of the first 10 {r['fill_median_first_10_seconds']} s, "
            f"of the last 10 {r['fill_median_last_10_seconds']} s.", "",
        ]  # fmt: skip
    if "outbound" in results["scenarios"]:
        r = results["scenarios"]["outbound"]
        lines += [
            "## Outbound sends to a local receiver (202 + messageId)", "",
            "| concurrent runs | batch each | requests in flight per run | sent | seconds | sends/s | bare POSTs/s before, after | ratio | receiver hits | duplicates | never received |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *[f"| {x['concurrent_runs']} | {x['batch_size']} | {x.get('send_concurrency_per_run', 1)} | {x['sent']} | {x['seconds']} | "
              f"**{x['sends_per_second']}** | {', '.join(str(b) for b in x.get('bare_posts_per_second_around', []))} | "
              f"{x.get('ratio_to_bare_posts', '')} | {x['receiver_hits']} | {x['duplicates']} | {x['never_received']} |" for x in r["runs"].values()],
            "", f"Targets: >= 500 sends/s, 0 duplicates. The receiver: {next(iter(r['runs'].values())).get('receiver_processes', 1)} "
            "processes of `bench/receiver.py` (asyncio) on one port (SO_REUSEPORT), 202 + messageId, keep-alive. Bare POSTs: the "
            "same requests through the product's HTTP code (`_post` on the run's urllib3 pool) from the same number of threads "
            "with no database or Redis, just before and after each round "
            "(the ceiling this machine allowed at that moment); ratio = sends/s over their median.", "",
            "CPU milliseconds per message, by process (sender = the process running `outbound_send_due`; PostgreSQL and "
            "Redis: this benchmark's own servers), in each round and in the bare-POST round just before it:", "",
            "| concurrent runs | sender | receiver | postgres | redis | bare: sender | bare: receiver |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *[f"| {x['concurrent_runs']} | {x['cpu_ms_per_send']['sender']} | {x['cpu_ms_per_send']['receiver']} | "
              f"{x['cpu_ms_per_send']['postgres']} | {x['cpu_ms_per_send']['redis']} | "
              f"{x['bare_cpu_ms_per_post_before']['sender']} | {x['bare_cpu_ms_per_post_before']['receiver']} |"
              for x in r["runs"].values() if "cpu_ms_per_send" in x], "",
        ]  # fmt: skip
    if "tenant_scale" in results["scenarios"]:
        lines += tenant_scale.markdown_lines(results["scenarios"]["tenant_scale"])
    if "events" in results["scenarios"]:
        lines += events_scenario.markdown_lines(results["scenarios"]["events"])
    if "reports" in results["scenarios"]:
        lines += reports.markdown_lines(results["scenarios"]["reports"])
    if "stream" in results["scenarios"]:
        lines += stream_scenario.markdown_lines(results["scenarios"]["stream"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only these scenarios")
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="create_api: alternating ping/create rounds")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument("--messages", type=int, default=50_000, help="queued creations to drain")
    parser.add_argument("--raw-rows", type=int, default=10_000, help="rows for the single-row INSERT baseline")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--assign-agents", type=int, default=50, help="online agents for the assignment scenario")
    parser.add_argument("--assign-chats", type=int, default=20_000, help="waiting chats for the bulk assignment run")
    parser.add_argument("--assign-arrivals", type=int, default=10_000, help="chats arriving while an assigner runs")
    parser.add_argument("--assign-rate", type=int, default=1000, help="arrival rate, chats/s")
    parser.add_argument("--assign-teams", type=int, default=10, help="teams the arrivals are routed to, against one team")
    parser.add_argument("--read-sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="messages in the chat")
    parser.add_argument("--read-connections", type=int, default=4, help="wrk connections for the read path")
    parser.add_argument("--read-rounds", type=int, default=3, help="wrk runs per read-path endpoint (median p99)")
    parser.add_argument("--read-warmup-seconds", type=int, default=3, help="wrk warm-up per read-path endpoint")
    parser.add_argument("--tenant-levels", type=int, nargs="+",
                        help="tenants existing before (provisioning: 10 200; tenant_scale: idle tenants, 100 1000 10000)")
    parser.add_argument("--tenant-samples", type=int, default=3, help="timed creations at each level")
    parser.add_argument("--outbound-messages", type=int, default=5000, help="queued outbound messages")
    parser.add_argument("--outbound-runs", type=int, nargs="+", default=[1, 4, 8], help="concurrent runs to compare")
    tenant_scale.add_arguments(parser)
    events_scenario.add_arguments(parser)
    reports.add_arguments(parser)
    stream_scenario.add_arguments(parser)
    args = parser.parse_args()

    import django

    django.setup()
    RESULTS.mkdir(exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="sociomile-bench-logs-"))
    processes = Processes(log_dir)
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    results = {
        "started_at": started_at,
        "command": "bench/run " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().machine}",
        "scenarios": {},
    }
    try:
        for name in args.only or list(SCENARIOS):
            print(f"== {name}", flush=True)
            results["scenarios"][name] = SCENARIOS[name](args, processes)
            print(json.dumps(results["scenarios"][name], indent=2), flush=True)
    finally:
        processes.stop_all()
    (RESULTS / f"{started_at}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{started_at}.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    print(f"results: bench/results/{started_at}.json and .md; process logs: {log_dir}")


if __name__ == "__main__":
    main()
