"""The `events` scenario: outgoing webhook delivery (events.delivery) against a local receiver.

- Throughput: N events (no chat: no order rule between them) delivered by one run of the tenant's delivery
  engine in this process to one endpoint, against bare POSTs of the same signed bodies through the same
  transport (core.transport.http_post) from as many threads as the run has requests in flight to one endpoint
  (EVENTS_ENDPOINT_CONCURRENCY), no database: deliveries/s and the ratio (target >= 0.8), measured just
  before and after.
- Latency: messages created through the product's service at a fixed offered rate (default 500/s) over
  `--events-chats` chats, persisted by a real worker's drain, whose `message.created` deliveries the same
  worker sends (the run enqueued on commit): create -> received p50/p99 (target p99 <= 1 s), lost (never
  received) and duplicates (a webhook-id received twice).

The receiver is bench/receiver.py (processes of their own), recording each request's webhook-id and arrival
time.
"""

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--events-deliveries", type=int, default=5000, help="events: deliveries for the throughput run")
    parser.add_argument("--events-rate", type=int, default=500, help="events: offered messages/s for the latency run")
    parser.add_argument("--events-seconds", type=int, default=20, help="events: length of the latency run")
    parser.add_argument("--events-chats", type=int, default=200, help="events: chats the messages go to")


def scenario_events(args, processes) -> dict:
    from django.conf import settings
    from django.db import connection
    from django_tenants.utils import schema_context

    from bench.bench import SLUG, _median, _percentile, bench_tenant, free_port, start_worker, wait_until
    from core.transport import http_post, http_target
    from events.delivery import webhook_deliveries_send, webhook_envelope, webhook_signature
    from events.models import Delivery, Event, WebhookEndpoint
    from events.services import events_record, webhook_endpoint_create

    receivers = 2
    port = free_port()
    url = f"http://127.0.0.1:{port}/events"
    keys_dir = Path(tempfile.mkdtemp(prefix="sociomile-bench-events-"))

    def receivers_start(name: str) -> list[Path]:
        paths = [keys_dir / f"{name}-{index}.keys" for index in range(receivers)]
        environment = {"BENCH_RECEIVER_KEY_HEADER": "webhook-id", "BENCH_RECEIVER_TIMES": "1"}
        os.environ.update(environment)
        try:
            for index, path in enumerate(paths):
                processes.start(f"events-receiver-{index}", [sys.executable, "-m", "bench.receiver", str(port), str(path)])
        finally:
            for key in environment:
                os.environ.pop(key)
        wait_until(lambda: all(Path(str(path) + ".tmp").exists() for path in paths), 30, "the receivers")
        return paths

    def receivers_stop(paths: list[Path]) -> list[tuple[str, float]]:
        for index in range(receivers):
            processes.stop(f"events-receiver-{index}")
        hits = []
        for path in paths:
            for line in path.read_text().splitlines():
                key, _, at = line.partition(" ")
                hits.append((key, float(at)))
        return hits

    tenant, application = bench_tenant()
    with schema_context(SLUG):
        WebhookEndpoint.objects.all().delete()
        Event.objects.all().delete()
        endpoint = webhook_endpoint_create(url=url, events=["*"])

    def bare_posts(count: int) -> float:
        """Signed POSTs/s of event bodies through the same transport and threads, with no database."""
        from concurrent.futures import ThreadPoolExecutor

        from django.utils import timezone

        concurrency = settings.EVENTS_ENDPOINT_CONCURRENCY  # what one run sends to one endpoint at once
        target = http_target(concurrency=concurrency, url=url, user_agent="sociomile-webhooks")
        sample = Event(type="chat.sla_breached", data={"n": 0})

        def post(index: int) -> None:
            body = webhook_envelope(sample)
            now = timezone.now()
            headers = {
                "webhook-id": f"bare-{index}", "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": webhook_signature(endpoint=endpoint, webhook_id=f"bare-{index}", timestamp=now,
                                                       body=body.decode(), now=now),
            }  # fmt: skip
            assert http_post(target=target, body=body, headers=headers).status == 202

        paths = receivers_start("bare")
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(post, range(count)))
        seconds = time.perf_counter() - started
        receivers_stop(paths)
        target.manager.clear()
        return round(count / seconds)

    results: dict = {"targets": {"ratio_to_bare_posts": ">= 0.8", "p99_ms": "<= 1000", "lost": "0"}}
    try:
        # --- throughput: one delivery run in this process over N due deliveries ---
        count = args.events_deliveries
        baseline = [bare_posts(count)]
        with schema_context(SLUG):
            for start in range(0, count, 1000):
                events_record(events=[("chat.sla_breached", {"n": n}, None, None, False) for n in range(start, min(count, start + 1000))])
            paths = receivers_start("throughput")
            started = time.perf_counter()
            summary = webhook_deliveries_send(max_seconds=600)
            seconds = time.perf_counter() - started
            hits = receivers_stop(paths)
            succeeded = Delivery.objects.filter(status="succeeded").count()
            ids = {event.webhook_id for event in Event.objects.all()}
        baseline.append(bare_posts(count))
        received = Counter(key for key, _ in hits)
        results["throughput"] = {
            "deliveries": count,
            "succeeded": succeeded,
            "claimed": summary.claimed,
            "seconds": round(seconds, 3),
            "deliveries_per_second": round(succeeded / seconds),
            "bare_posts_per_second_around": baseline,
            "ratio_to_bare_posts": round(succeeded / seconds / _median(baseline), 2),
            "duplicates": sum(n - 1 for n in received.values() if n > 1),
            "never_received": len(ids - set(received)),
            "send_concurrency": settings.EVENTS_SEND_CONCURRENCY,
            "endpoint_concurrency": settings.EVENTS_ENDPOINT_CONCURRENCY,
            "endpoint_window": settings.EVENTS_ENDPOINT_WINDOW,
            "batch": settings.EVENTS_DELIVERY_BATCH,
        }

        # --- latency: messages offered at a fixed rate, persisted and delivered by a real worker ---
        from conversations.services import chat_create, creations_persist, message_create

        with schema_context(SLUG):
            Event.objects.all().delete()
            WebhookEndpoint.objects.all().delete()
            endpoint = webhook_endpoint_create(url=url, events=["message.created"])
            chats = [chat_create(application=application, customer_id=f"events-{n}") for n in range(args.events_chats)]
            creations_persist(batch_size=1000)
        start_worker(processes, concurrency=args.worker_concurrency, log_dir=processes.log_dir)
        paths = receivers_start("latency")
        total = args.events_rate * args.events_seconds
        offered_at: dict[str, float] = {}
        lock = threading.Lock()
        producers = 4
        behind = []

        def produce(worker: int) -> None:
            interval = producers / args.events_rate
            began = time.time()
            with schema_context(SLUG):
                for index in range(worker, total, producers):
                    due = began + (index // producers) * interval
                    delay = due - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    elif delay < -0.5:
                        behind.append(delay)
                    now = time.time()
                    body = f"bench {index} {now:.6f}"
                    message_create(application=application, chat_number=chats[index % len(chats)], body=body)
                    with lock:
                        offered_at[body] = now
            connection.close()

        threads = [threading.Thread(target=produce, args=(worker,)) for worker in range(producers)]
        offered_started = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        offered_seconds = time.time() - offered_started

        def delivered() -> int:
            with schema_context(SLUG):
                return Delivery.objects.filter(status="succeeded").count()

        try:
            wait_until(lambda: delivered() >= total, 120, "every message delivered")
        except TimeoutError:
            pass
        hits = receivers_stop(paths)
        with schema_context(SLUG):
            body_of = {f"evt_{public_id}": data["body"] for public_id, data in Event.objects.filter(type="message.created").values_list("public_id", "data")}
            statuses = Counter(Delivery.objects.values_list("status", flat=True))
        first_arrival: dict[str, float] = {}
        received = Counter()
        for key, at in hits:
            received[key] += 1
            first_arrival[key] = min(at, first_arrival.get(key, at))
        latencies = sorted(
            (first_arrival[key] - offered_at[body_of[key]]) * 1000 for key in first_arrival if key in body_of and body_of[key] in offered_at
        )
        results["latency"] = {
            "offered_rate": args.events_rate,
            "offered_messages": total,
            "offered_seconds": round(offered_seconds, 2),
            "achieved_offered_rate": round(total / offered_seconds),
            "producer_late_by_over_500ms": len(behind),
            "events_recorded": len(body_of),
            "delivered": len(first_arrival),
            "lost": total - len(first_arrival),
            "duplicates": sum(n - 1 for n in received.values() if n > 1),
            "delivery_statuses": dict(statuses),
            "p50_ms": round(_percentile(latencies, 0.5), 1) if latencies else None,
            "p99_ms": round(_percentile(latencies, 0.99), 1) if latencies else None,
            "max_ms": round(latencies[-1], 1) if latencies else None,
            "chats": args.events_chats,
            "worker_concurrency": args.worker_concurrency,
        }
    finally:
        for index in range(receivers):
            processes.stop(f"events-receiver-{index}")
        processes.stop("worker")
        connection.close()
    return results


def markdown_lines(result: dict) -> list[str]:
    lines = ["## events (outgoing webhooks)", ""]
    t = result.get("throughput")
    if t:
        lines += [
            f"- Throughput: {t['deliveries_per_second']} deliveries/s ({t['succeeded']}/{t['deliveries']} in {t['seconds']} s), "
            f"bare signed POSTs {t['bare_posts_per_second_around']}/s before/after: ratio **{t['ratio_to_bare_posts']}** "
            f"(target >= 0.8); duplicates {t['duplicates']}, never received {t['never_received']}.",
        ]
    latency = result.get("latency")
    if latency:
        lines += [
            f"- Latency at {latency['offered_rate']} messages/s offered ({latency['achieved_offered_rate']}/s achieved, "
            f"{latency['offered_messages']} messages over {latency['chats']} chats): message create -> received "
            f"p50 **{latency['p50_ms']} ms**, p99 **{latency['p99_ms']} ms** (target <= 1000), max {latency['max_ms']} ms; "
            f"lost {latency['lost']}, duplicates {latency['duplicates']}; deliveries {latency['delivery_statuses']}.",
        ]
    return lines + [""]
