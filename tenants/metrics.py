"""Per-tenant task metrics, kept in Redis so every worker process on every machine adds to the same numbers.

Why Redis and not prometheus-client's multiprocess mode: that mode writes one file per process into
PROMETHEUS_MULTIPROC_DIR, which only a web process on the same machine can read, and which needs cleaning
up as prefork children come and go. Task outcomes happen in worker processes on any machine; a few
HINCRBY per task into the tenant's hash is cheap and the platform's `/metrics` view reads one hash per
tenant. Counters restart from zero only if Redis loses its data, which Prometheus treats as a reset.

Keys: `sociomile:<schema>:metrics`, a hash with `tasks|<task>|<outcome>` counts; histograms as
`<histogram>|<task>|sum`, `<histogram>|<task>|count` and `<histogram>|<task>|le|<bound>` (non-cumulative bucket
counts; the collector accumulates them), for `duration` (how long a task ran), `wait` (from its publish to its
start: the queue's latency) and `assignment_wait|-` (a chat's arrival to its assignment); `deliveries|<channel>|
<outcome>` counts (outbound messages and webhook deliveries, from each run's summary); `http|5xx` counts (answers
with a 5xx status, counted by core.middleware.RequestIdMiddleware; the platform host's under `public`).
"""

import logging
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from core.redis import get_redis, tenant_key

logger = logging.getLogger(__name__)

# Seconds; tasks here are short (a database write, an outbound HTTP call with a timeout).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# Seconds from a chat's arrival to its assignment: from an agent free at once to a queue that waits overnight.
ASSIGNMENT_WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)

# The histograms kept in a tenant's hash: their field name and buckets.
HISTOGRAMS = {"duration": DURATION_BUCKETS, "wait": DURATION_BUCKETS, "assignment_wait": ASSIGNMENT_WAIT_BUCKETS}

# The message header holding when a task was published (epoch seconds), for its wait in the queue.
SENT_AT_HEADER = "sociomile_sent_at"

# Celery's task states as task_postrun reports them, mapped to the outcome label.
OUTCOMES = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "RETRY": "retried",
    "IGNORED": "ignored",
    "REJECTED": "rejected",
}


def _metrics_key(schema_name: str) -> str:
    return tenant_key(schema_name, "metrics")


def _histogram_add(pipe, key: str, histogram: str, label: str, seconds: float) -> None:
    bound = next((bound for bound in HISTOGRAMS[histogram] if seconds <= bound), "+Inf")
    pipe.hincrbyfloat(key, f"{histogram}|{label}|sum", seconds)
    pipe.hincrby(key, f"{histogram}|{label}|count", 1)
    pipe.hincrby(key, f"{histogram}|{label}|le|{bound}", 1)


def tenant_task_observe(
    *, schema_name: str, task_name: str, outcome: str, seconds: float, wait_seconds: float | None = None
) -> None:
    """Counts one finished task of the tenant with its outcome, how long it ran and how long it had waited in
    its queue (None: not known, as for a task published without the header)."""
    with get_redis().pipeline(transaction=False) as pipe:
        key = _metrics_key(schema_name)
        pipe.hincrby(key, f"tasks|{task_name}|{outcome}", 1)
        _histogram_add(pipe, key, "duration", task_name, seconds)
        if wait_seconds is not None:
            _histogram_add(pipe, key, "wait", task_name, max(wait_seconds, 0.0))
        pipe.execute()


def tenant_assignment_waits_observe(*, schema_name: str, waits: list[float]) -> None:
    """Counts chats just assigned with how long each waited since it arrived."""
    if not waits:
        return
    with get_redis().pipeline(transaction=False) as pipe:
        key = _metrics_key(schema_name)
        for seconds in waits:
            _histogram_add(pipe, key, "assignment_wait", "-", max(seconds, 0.0))
        pipe.execute()


def tenant_deliveries_count(*, schema_name: str, channel: str, outcomes: dict[str, int]) -> None:
    """Adds one run's delivery outcomes (`outbound`: sent, retrying, failed; `webhook`: succeeded, retrying,
    dead). A run that delivered nothing costs no round trip."""
    counted = {outcome: count for outcome, count in outcomes.items() if count}
    if not counted:
        return
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            for outcome, count in counted.items():
                pipe.hincrby(_metrics_key(schema_name), f"deliveries|{channel}|{outcome}", count)
            pipe.execute()
    except Exception:  # metrics must never fail the run that delivered
        logger.warning("could not record delivery metrics", exc_info=True)


def http_server_error_count(*, schema_name: str) -> None:
    """Counts one 5xx answer of the tenant's host (`public`: the platform host's)."""
    try:
        get_redis().hincrby(_metrics_key(schema_name), "http|5xx", 1)
    except Exception:  # Redis away is often why it was a 5xx: the answer goes out all the same
        logger.warning("could not count a 5xx answer", exc_info=True)


def tenant_metrics_forget(*, schema_name: str) -> None:
    get_redis().delete(_metrics_key(schema_name))


def tenant_metrics_read(*, schema_names: list[str]) -> dict[str, dict[str, str]]:
    if not schema_names:
        return {}
    with get_redis().pipeline(transaction=False) as pipe:
        for name in schema_names:
            pipe.hgetall(_metrics_key(name))
        hashes = pipe.execute()
    return {
        name: {field.decode(): value.decode() for field, value in values.items()}
        for name, values in zip(schema_names, hashes)
    }


class TenantMetricsCollector:
    """prometheus-client collector: per-tenant queue depth, tasks in flight, limit, outcomes, durations, queue
    waits, assignment waits, delivery outcomes, 5xx answers."""

    def collect(self):
        from django_tenants.utils import get_public_schema_name

        from tenants import concurrency
        from tenants.models import Tenant
        from tenants.queues import tenant_queue_depths

        limits = dict(Tenant.objects.order_by("schema_name").values_list("schema_name", "concurrency"))
        names = list(limits)
        depths = tenant_queue_depths(schema_names=names)
        in_flight = concurrency.tenant_slots_in_use_many(schema_names=names)
        public = get_public_schema_name()
        stored = tenant_metrics_read(schema_names=[*names, public])

        depth = GaugeMetricFamily(
            "sociomile_tenant_queue_depth", "Tasks waiting in the tenant's queue.", labels=["tenant"]
        )
        running = GaugeMetricFamily(
            "sociomile_tenant_tasks_in_flight", "The tenant's tasks running now, on any worker.", labels=["tenant"]
        )
        limit = GaugeMetricFamily(
            "sociomile_tenant_concurrency_limit", "How many of the tenant's tasks may run at once.", labels=["tenant"]
        )
        outcomes = CounterMetricFamily(
            "sociomile_tenant_tasks", "The tenant's finished tasks by outcome.", labels=["tenant", "task", "outcome"]
        )
        histograms = {
            "duration": HistogramMetricFamily(
                "sociomile_tenant_task_duration_seconds", "How long the tenant's tasks ran.", labels=["tenant", "task"]
            ),
            "wait": HistogramMetricFamily(
                "sociomile_tenant_task_wait_seconds",
                "How long the tenant's tasks waited from their publish to their start (queue latency).",
                labels=["tenant", "task"],
            ),
            "assignment_wait": HistogramMetricFamily(
                "sociomile_tenant_assignment_wait_seconds",
                "How long the tenant's chats waited from arrival to assignment.",
                labels=["tenant"],
            ),
        }
        deliveries = CounterMetricFamily(
            "sociomile_tenant_deliveries",
            "The tenant's outbound messages and webhook deliveries by outcome, as each run ended them.",
            labels=["tenant", "channel", "outcome"],
        )
        server_errors = CounterMetricFamily(
            "sociomile_http_server_errors", "Answers with a 5xx status, by host's tenant (public: the platform).",
            labels=["tenant"],
        )
        for name in names:
            depth.add_metric([name], depths[name])
            running.add_metric([name], in_flight[name])
            limit.add_metric([name], limits[name])
        for name in [*names, public]:
            values = stored[name]
            for field, value in sorted(values.items()):
                kind, label, *rest = field.split("|")
                if kind == "tasks":
                    outcomes.add_metric([name, label, rest[0]], int(value))
                elif kind == "deliveries":
                    deliveries.add_metric([name, label, rest[0]], int(value))
                elif kind == "http" and label == "5xx":
                    server_errors.add_metric([name], int(value))
                elif kind in histograms and rest == ["count"]:
                    labels = [name] if kind == "assignment_wait" else [name, label]
                    histograms[kind].add_metric(labels, _buckets(values, kind, label), float(values[f"{kind}|{label}|sum"]))
        return [depth, running, limit, outcomes, *histograms.values(), deliveries, server_errors]


def _buckets(values: dict[str, str], histogram: str, label: str) -> list[tuple[str, int]]:
    cumulative, buckets = 0, []
    for bound in (*HISTOGRAMS[histogram], "+Inf"):
        cumulative += int(values.get(f"{histogram}|{label}|le|{bound}", 0))
        buckets.append((str(bound), cumulative))
    return buckets


# --- worker signal handlers (connected in tenants.apps): one service call each -------------------------

_started: dict[str, tuple[float, float | None]] = {}


def on_before_task_publish(headers=None, **kwargs) -> None:
    """Stamps when the task was published, for its wait in the queue. Not a task with an ETA or countdown (a
    retry's backoff): its wait is chosen, not latency."""
    if headers is not None and not headers.get("eta"):
        headers[SENT_AT_HEADER] = time.time()


def on_task_prerun(task_id=None, task=None, **kwargs) -> None:
    request = getattr(task, "request", None)
    sent_at = None
    if request is not None:
        sent_at = request.get(SENT_AT_HEADER) or (getattr(request, "headers", None) or {}).get(SENT_AT_HEADER)
    wait = time.time() - float(sent_at) if isinstance(sent_at, (int, float)) else None
    _started[task_id] = (time.monotonic(), wait)


def on_task_postrun(task_id=None, task=None, state=None, **kwargs) -> None:
    from tenants.queues import task_schema_name

    started = _started.pop(task_id, None)
    schema_name = task_schema_name(task)
    if started is None or schema_name is None:
        return
    outcome = OUTCOMES.get(state, (state or "unknown").lower())
    try:
        tenant_task_observe(
            schema_name=schema_name, task_name=task.name, outcome=outcome, seconds=time.monotonic() - started[0],
            wait_seconds=started[1],
        )  # fmt: skip
    except Exception:  # metrics must never fail a task
        logger.warning("could not record task metrics", exc_info=True)


def on_chats_assigned(assignments) -> None:
    """agents.hooks listener: after the assigning transaction commits, each chat's wait from arrival to
    assignment, from the times the announcement carries (no query: a query here, in its own schema context,
    cost the drain's assignment three round trips). After the commit: a rolled-back assignment counts nothing."""
    from django.db import connection, transaction

    schema_name = connection.schema_name
    waits = [(a.assigned_at - a.created_at).total_seconds() for a in assignments if a.created_at and a.assigned_at]

    def observe():
        try:
            tenant_assignment_waits_observe(schema_name=schema_name, waits=waits)
        except Exception:  # metrics must never fail an assignment
            logger.warning("could not record assignment waits", exc_info=True)

    transaction.on_commit(observe)
