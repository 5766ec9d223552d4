"""The `stream` scenario of bench/run (issue 22): N concurrent streams on ONE ASGI process (uvicorn, production
settings), its memory per idle connection, and commit -> received latency while events flow.

Setup: a tenant with `--stream-connections` agent users and one assigned chat each (bulk SQL: no password
hashing), plus `--stream-admins` admins; one ticket each. A client process (asyncio on raw sockets, uvloop, its own
open-file limit raised) opens every stream and timestamps each frame it reads.

Measured:
- memory: the server's RSS once one stream has been opened and closed (imports, the subscription, the pools), then
  with every stream open and idle; (after - before) / streams.
- latency: the bench process records `message.created` events at `--stream-rate` per second (open loop), each in
  its own transaction on one agent's chat (so one agent's stream and every admin's receives it), stamping the
  moment it committed (an on_commit callback registered before the recording's own); the client stamps the
  moment it read the frame. p50/p99 over every (event, receiving stream) pair; events never received are counted.
"""

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGETS = {"p99_ms": 200.0, "kb_per_idle_connection": 100.0}


def add_arguments(parser) -> None:
    group = parser.add_argument_group("stream")
    group.add_argument("--stream-connections", type=int, default=2000, help="stream: agents' streams on one process")
    group.add_argument("--stream-admins", type=int, default=10, help="stream: admins' streams (they get every event)")
    group.add_argument("--stream-rate", type=int, default=200, help="stream: events per second while measuring")
    group.add_argument("--stream-seconds", type=int, default=20, help="stream: how long events flow")
    group.add_argument("--stream-producers", type=int, default=8, help="stream: threads recording the events")


def _raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _tenant(agents: int, admins: int) -> dict:
    from django.db import connection
    from django_tenants.utils import schema_context

    from conversations.services import application_create
    from core.models import User
    from stream.services import stream_ticket_create
    from tenants.models import Tenant
    from tenants.services import tenant_create

    slug = f"stream{agents}"
    if not Tenant.objects.filter(schema_name=slug).exists():
        tenant_create(name=slug, slug=slug, admin_email=f"admin@{slug}.test", admin_password="bench-password-123")
        with schema_context(slug):
            application = application_create(name="stream bench")
            with connection.cursor() as cursor:
                # Users with an unusable password (streams need no sign-in: tickets are made here), one chat each.
                cursor.execute("""
                    INSERT INTO core_user (email, name, role, is_active, is_staff, is_superuser, password, date_joined)
                    SELECT 'agent' || i || '@bench.test', '', 'agent', true, false, false, '!', now()
                    FROM generate_series(1, %s) AS i""", [agents])  # fmt: skip
                cursor.execute("""
                    INSERT INTO core_user (email, name, role, is_active, is_staff, is_superuser, password, date_joined)
                    SELECT 'admin' || i || '@bench.test', '', 'admin', true, false, false, '!', now()
                    FROM generate_series(1, %s) AS i""", [admins])  # fmt: skip
                cursor.execute("""
                    INSERT INTO conversations_chat (application_id, number, status, customer_id, messages_count,
                                                    created_at, updated_at, assigned_agent_id, assigned_at)
                    SELECT %s, row_number() OVER (ORDER BY id), 'assigned', 'c' || id, 0, now(), now(), id, now()
                    FROM core_user WHERE role = 'agent' AND email LIKE '%%@bench.test'""", [application.id])  # fmt: skip
    with schema_context(slug):
        from conversations.models import Application, Chat

        application = Application.objects.get(name="stream bench")
        chats = list(Chat.objects.filter(application=application).values_list("id", "number", "assigned_agent_id"))
        users = list(User.objects.filter(email__endswith="@bench.test").order_by("role", "id"))
        tickets = [stream_ticket_create(user=user).ticket for user in users]  # admins first ("admin" < "agent")
        warm_ticket = stream_ticket_create(user=User.objects.get(email=f"admin@{slug}.test")).ticket
    return {"slug": slug, "application_id": application.id, "application_token": application.token, "chats": chats,
            "tickets": tickets, "warm_ticket": warm_ticket, "admins": admins}  # fmt: skip


def _start_stream_server(processes, port: int):
    command = [sys.executable, "-m", "uvicorn", "sociomile.asgi:application", "--host", "127.0.0.1", "--port", str(port),
               "--no-access-log", "--timeout-graceful-shutdown", "2", "--backlog", "4096"]  # fmt: skip
    process = processes.start("stream", command)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("uvicorn did not start")


# --- the client process -------------------------------------------------------------------------------------

CLIENT = r'''
import asyncio, json, resource, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
spec = json.loads(open(sys.argv[1]).read())
received = []  # (stream index, body marker, wall time read)
opened = 0
failures = []

async def one(index, ticket):
    global opened
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
        writer.write(f"GET /api/stream?ticket={ticket} HTTP/1.1\r\nHost: {spec['host']}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            failures.append(head[:200].decode(errors="replace")); return
        opened += 1
        buffer = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.time()
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        marker = json.loads(line[6:])["data"]["body"]
                        received.append((index, marker, now))
    except Exception as error:
        failures.append(repr(error))

async def main():
    tasks = []
    for start in range(0, len(spec["tickets"]), 100):
        for index in range(start, min(start + 100, len(spec["tickets"]))):
            tasks.append(asyncio.create_task(one(index, spec["tickets"][index])))
        await asyncio.sleep(0.05)
    while opened + len(failures) < len(spec["tickets"]):
        await asyncio.sleep(0.05)
    print(json.dumps({"opened": opened, "failures": failures[:5], "failure_count": len(failures)}), flush=True)
    # The bench says when the events are done (read in a thread: the loop keeps reading the streams).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    open(spec["out"], "w").write(json.dumps(received))
    print("done", flush=True)

asyncio.run(main())
'''


def scenario_stream(args, processes) -> dict:
    from django.db import transaction
    from django_tenants.utils import schema_context

    from bench import bench as harness  # here, not at import: bench.bench registers this scenario
    from events.services import event_record

    open_files = _raise_open_files()  # inherited by uvicorn and the client
    world = _tenant(args.stream_connections, args.stream_admins)
    harness._database_settle()
    port = harness.free_port()
    server = _start_stream_server(processes, port)
    host = f"{world['slug']}.localhost"
    work = Path(tempfile.mkdtemp(prefix="sociomile-bench-stream-"))

    # Warm-up: one stream (the tenant's own admin, not a measured one) opened and closed (imports, the
    # subscription, the thread pools), then the baseline.
    with socket.create_connection(("127.0.0.1", port)) as warm:
        warm.sendall(f"GET /api/stream?ticket={world['warm_ticket']} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        warm.settimeout(10)
        first = warm.recv(4096)
        if b" 200 " not in first.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"the stream answered {first[:300]!r}")
    time.sleep(1.0)
    rss_before, threads_before = _rss_kb(server.pid), _threads(server.pid)

    spec_path, out_path = work / "spec.json", work / "received.json"
    spec_path.write_text(json.dumps({"port": port, "host": host, "tickets": world["tickets"], "out": str(out_path)}))
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(spec_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    opened = json.loads(client.stdout.readline())
    time.sleep(3.0)  # idle: let every connection settle
    rss_idle, threads_idle = _rss_kb(server.pid), _threads(server.pid)
    streams = opened["opened"]

    # Events at a fixed offered rate (open loop), each on one agent's chat, from a few threads: one recording
    # (a transaction and its notice) takes longer than 1/rate on a busy machine.
    committed: dict[str, float] = {}
    published: dict[str, float] = {}
    chats = world["chats"]
    interval, count = 1.0 / args.stream_rate, args.stream_rate * args.stream_seconds
    producers = args.stream_producers
    started = time.monotonic() + 0.5

    def produce(first: int) -> None:
        from django.db import connection as thread_connection

        with schema_context(world["slug"]):
            for index in range(first, count, producers):
                delay = started + index * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                chat_id, number, _agent = chats[index % len(chats)]
                marker = f"e{index}"
                with transaction.atomic():
                    # Registered before the recording's own callback (the notice): runs right at the commit.
                    transaction.on_commit(lambda marker=marker: committed.__setitem__(marker, time.time()))
                    event_record(type="message.created", chat_id=chat_id, application_id=world["application_id"], data={
                        "application": world["application_token"], "chat_number": number, "number": 1, "body": marker,
                        "sender": "customer", "customer_id": "c", "agent_email": None, "private": False, "attachments": []})  # fmt: skip
                published[marker] = time.time()  # the notice's query and PUBLISH are done (on_commit, in order)
        thread_connection.close()

    threads = [threading.Thread(target=produce, args=(first,)) for first in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    achieved_rate = count / (time.monotonic() - started)
    time.sleep(5.0)  # the last events' frames
    rss_busy = _rss_kb(server.pid)
    client.stdin.write("\n")
    client.stdin.flush()
    client.stdout.readline()
    client.wait(60)
    received = json.loads(out_path.read_text())

    latencies = [(at - committed[marker]) * 1000 for _index, marker, at in received if marker in committed]
    pairs = [(index, marker) for index, marker, _at in received]
    admin_streams = min(world["admins"], streams)
    expected_pairs = count * (1 + admin_streams)
    latencies.sort()
    publishing = sorted((published[marker] - committed[marker]) * 1000 for marker in committed if marker in published)

    def pct(fraction: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(round(fraction * (len(latencies) - 1))))], 1) if latencies else None

    return {
        "streams_open": streams,
        "open_failures": opened["failure_count"],
        "open_file_limit": open_files,
        "rss_kb_before": rss_before,
        "rss_kb_idle": rss_idle,
        "rss_kb_while_events_flowed": rss_busy,
        "kb_per_idle_connection": round((rss_idle - rss_before) / max(streams, 1), 1),
        "server_threads_before_and_idle": [threads_before, threads_idle],
        "events": count,
        "offered_rate": args.stream_rate,
        "achieved_rate": round(achieved_rate, 1),
        "frames_expected": expected_pairs,
        "frames_received": len(received),
        "frames_duplicated": len(pairs) - len(set(pairs)),
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": round(latencies[-1], 1) if latencies else None,
                       "mean": round(statistics.fmean(latencies), 1) if latencies else None},
        # Part of the latency spent in the recording process: the after-commit query and PUBLISH.
        "commit_to_published_ms": {"p50": round(publishing[len(publishing) // 2], 1) if publishing else None,
                                   "p99": round(publishing[int(0.99 * (len(publishing) - 1))], 1) if publishing else None},
        "load_average_1min_at_end": os.getloadavg()[0],
        "targets": TARGETS,
    }


def markdown_lines(r: dict) -> list[str]:
    return [
        "## Real-time stream: streams on one ASGI process (uvicorn)", "",
        "| streams open | RSS before / idle / busy (MB) | KB per idle stream | server threads before / idle | events (rate) | frames received / expected | commit -> received p50 / p99 / max ms |",
        "| ---: | --- | ---: | --- | ---: | --- | --- |",
        f"| {r['streams_open']} | {r['rss_kb_before'] // 1024} / {r['rss_kb_idle'] // 1024} / {r['rss_kb_while_events_flowed'] // 1024} "
        f"| **{r['kb_per_idle_connection']}** | {r['server_threads_before_and_idle'][0]} / {r['server_threads_before_and_idle'][1]} "
        f"| {r['events']} ({r['achieved_rate']}/s) | {r['frames_received']} / {r['frames_expected']} "
        f"| {r['latency_ms']['p50']} / **{r['latency_ms']['p99']}** / {r['latency_ms']['max']} |",
        "", f"Of which commit -> notice published (the recording process's query and PUBLISH): p50 "
        f"{r.get('commit_to_published_ms', {}).get('p50')} / p99 {r.get('commit_to_published_ms', {}).get('p99')} ms. "
        f"Load average at the end: {r.get('load_average_1min_at_end')} (2 cores).", "",
        f"Targets: <= {TARGETS['kb_per_idle_connection']} KB per idle stream, p99 <= {TARGETS['p99_ms']} ms "
        "(bench/stream.py: each event goes to its chat's agent and to every admin's stream).", "",
    ]  # fmt: skip
