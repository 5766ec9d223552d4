"""Sociomile benchmark harness. Run it through `bench/run`, which starts PostgreSQL and Redis for it.

Every figure is measured side by side in one run on the same machine and reported as a median or a
ratio: these machines are shared and small, so absolute numbers move from run to run.

Scenarios (more are added as capabilities land; see `--only`):
- `create_api`: POST .../messages (202) against the same server's cheapest endpoint, with wrk at 64
  connections: throughput ratio and p50/p99 latency.
- `drain`: time for the workers to persist N queued message creations, against single-row committed
  INSERTs of the same rows from one psycopg connection.
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


def scenario_create_api(args, processes: Processes) -> dict:
    _, application = bench_tenant()
    url = start_web(processes, workers=args.web_workers, threads=args.web_threads)
    host = f"{SLUG}.localhost"
    start_worker(processes, concurrency=2, log_dir=processes.log_dir)
    # warm-up: connections, caches, imports in every gunicorn worker
    wrk(url=f"{url}/bench/ping", host=host, seconds=2, connections=args.connections)
    trivial = wrk(url=f"{url}/bench/ping", host=host, seconds=args.seconds, connections=args.connections)
    create = wrk(
        url=f"{url}/api/applications/{application.token}/chats/1/messages",
        host=host, seconds=args.seconds, connections=args.connections, method="POST", body='{"body": "hello from wrk"}',
    )  # fmt: skip
    processes.stop("web")
    processes.stop("worker")
    return {
        "trivial_endpoint": trivial,
        "message_create": create,
        "throughput_ratio": round(create["requests_per_second"] / trivial["requests_per_second"], 3),
        "targets": {"throughput_ratio": ">= 0.6", "message_create.p99_ms": "<= 50"},
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
        original = services._schedule_drain
        services._schedule_drain = lambda: None
        try:
            for index in range(args.messages):
                services.message_create(application=application, chat_number=1, body=f"message {index} " + "x" * 40)
        finally:
            services._schedule_drain = original
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


SCENARIOS = {"create_api": scenario_create_api, "drain": scenario_drain}


def markdown(results: dict) -> str:
    lines = [f"# Benchmark {results['started_at']}", "", f"`{results['command']}` on {results['machine']}", ""]
    if "create_api" in results["scenarios"]:
        r = results["scenarios"]["create_api"]
        lines += [
            "## Message-create API vs the trivial endpoint (wrk, 64 connections)", "",
            "| endpoint | req/s | p50 ms | p99 ms | non-2xx |", "| --- | ---: | ---: | ---: | ---: |",
            *[f"| {name} | {r[key]['requests_per_second']:.0f} | {r[key]['p50_ms']} | {r[key]['p99_ms']} | {r[key]['non_2xx']} |"
              for name, key in (("GET /bench/ping", "trivial_endpoint"), ("POST .../messages", "message_create"))],
            "", f"Throughput ratio: **{r['throughput_ratio']}** (target >= 0.6); p99 target <= 50 ms.", "",
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
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only these scenarios")
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument("--messages", type=int, default=50_000, help="queued creations to drain")
    parser.add_argument("--raw-rows", type=int, default=10_000, help="rows for the single-row INSERT baseline")
    parser.add_argument("--worker-concurrency", type=int, default=2)
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
