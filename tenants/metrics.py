"""Per-tenant task metrics, kept in Redis so every worker process on every machine adds to the same numbers.

Why Redis and not prometheus-client's multiprocess mode: that mode writes one file per process into
PROMETHEUS_MULTIPROC_DIR, which only a web process on the same machine can read, and which needs cleaning
up as prefork children come and go. Task outcomes happen in worker processes on any machine; a few
HINCRBY per task into the tenant's hash is cheap and the platform's `/metrics` view reads one hash per
tenant. Counters restart from zero only if Redis loses its data, which Prometheus treats as a reset.

Keys: `sociomile:<schema>:metrics`, a hash with `tasks|<task>|<outcome>` counts and, per task,
`duration|<task>|sum`, `duration|<task>|count` and `duration|<task>|le|<bound>` (non-cumulative bucket
counts; the collector accumulates them).
"""

import logging
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from core.redis import get_redis, tenant_key

logger = logging.getLogger(__name__)

# Seconds; tasks here are short (a database write, an outbound HTTP call with a timeout).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

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


def tenant_task_observe(*, schema_name: str, task_name: str, outcome: str, seconds: float) -> None:
    """Counts one finished task of the tenant with its outcome and how long it ran."""
    bound = next((bound for bound in DURATION_BUCKETS if seconds <= bound), "+Inf")
    with get_redis().pipeline(transaction=False) as pipe:
        key = _metrics_key(schema_name)
        pipe.hincrby(key, f"tasks|{task_name}|{outcome}", 1)
        pipe.hincrbyfloat(key, f"duration|{task_name}|sum", seconds)
        pipe.hincrby(key, f"duration|{task_name}|count", 1)
        pipe.hincrby(key, f"duration|{task_name}|le|{bound}", 1)
        pipe.execute()


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
    """prometheus-client collector: per-tenant queue depth, tasks in flight, limit, outcomes, durations."""

    def collect(self):
        from tenants import concurrency
        from tenants.models import Tenant
        from tenants.queues import tenant_queue_depths

        limits = dict(Tenant.objects.order_by("schema_name").values_list("schema_name", "concurrency"))
        names = list(limits)
        depths = tenant_queue_depths(schema_names=names)
        in_flight = concurrency.tenant_slots_in_use_many(schema_names=names)
        stored = tenant_metrics_read(schema_names=names)

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
        durations = HistogramMetricFamily(
            "sociomile_tenant_task_duration_seconds", "How long the tenant's tasks ran.", labels=["tenant", "task"]
        )
        for name in names:
            depth.add_metric([name], depths[name])
            running.add_metric([name], in_flight[name])
            limit.add_metric([name], limits[name])
            values = stored[name]
            for field, value in sorted(values.items()):
                kind, task_name, *rest = field.split("|")
                if kind == "tasks":
                    outcomes.add_metric([name, task_name, rest[0]], int(value))
                elif kind == "duration" and rest == ["count"]:
                    counts = {
                        bound: int(values.get(f"duration|{task_name}|le|{bound}", 0))
                        for bound in (*DURATION_BUCKETS, "+Inf")
                    }
                    cumulative, buckets = 0, []
                    for bound, count in counts.items():
                        cumulative += count
                        buckets.append((str(bound), cumulative))
                    durations.add_metric([name, task_name], buckets, float(values.get(f"duration|{task_name}|sum", 0)))
        return [depth, running, limit, outcomes, durations]


# --- worker signal handlers (connected in tenants.apps): one service call each -------------------------

_started: dict[str, float] = {}


def on_task_prerun(task_id=None, **kwargs) -> None:
    _started[task_id] = time.monotonic()


def on_task_postrun(task_id=None, task=None, state=None, **kwargs) -> None:
    from tenants.queues import task_schema_name

    started = _started.pop(task_id, None)
    schema_name = task_schema_name(task)
    if started is None or schema_name is None:
        return
    outcome = OUTCOMES.get(state, (state or "unknown").lower())
    try:
        tenant_task_observe(
            schema_name=schema_name, task_name=task.name, outcome=outcome, seconds=time.monotonic() - started
        )
    except Exception:  # metrics must never fail a task
        logger.warning("could not record task metrics", exc_info=True)
