"""Helpers for the tests that run real workers: probe runs, overlap, worker processes that recover fast."""

from core.tests.support import api_client, make_user, token_for
from core.models import User
from sociomile.celery import app
from tenants.selectors import tenant_probe_events

# Workers whose dead peers' leases expire within seconds, not minutes (RabbitMQ redelivers their messages
# as soon as their connection drops).
FAST_RECOVERY_ENV = {
    "CELERY_TASK_SOFT_TIME_LIMIT": "4",
    "CELERY_TASK_TIME_LIMIT": "5",
    "TENANT_SLOT_LEASE_SECONDS": "3",
    # The fleet tests count messages per process ("as many events as all workers have processes, so two of
    # them are the victim's"): one unacknowledged message per process, as the first rounds' default was. The
    # production default (4, sociomile/settings/celery.py) runs in every other worker of the suite.
    "CELERY_WORKER_PREFETCH_MULTIPLIER": "1",
}


def live_platform_api():
    """A platform admin's client for tests on committed data (live_db)."""
    return api_client(token=token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None))


def probe_intervals(schema_name: str, run_id: str) -> dict[int, dict]:
    """index -> {"start", "end", "worker", "starts"} from a probe run's records."""
    intervals: dict[int, dict] = {}
    for entry in tenant_probe_events(schema_name=schema_name, run_id=run_id):
        interval = intervals.setdefault(entry["index"], {"starts": 0, "end": None})
        if entry["event"] == "start":
            interval.update(start=entry["at"], worker=entry["worker"], starts=interval["starts"] + 1)
        else:
            interval["end"] = entry["at"]
    return intervals


def finished(schema_name: str, run_id: str) -> int:
    return sum(1 for interval in probe_intervals(schema_name, run_id).values() if interval["end"] is not None)


def max_overlap(intervals) -> int:
    """The most intervals running at the same instant (an end at t comes before a start at t)."""
    edges = sorted([(item["start"], 1) for item in intervals] + [(item["end"], -1) for item in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def first_time_overlap_reached(intervals, level: int) -> float | None:
    edges = sorted([(item["start"], 1) for item in intervals] + [(item["end"], -1) for item in intervals])
    running = 0
    for at, step in edges:
        running += step
        if running >= level:
            return at
    return None


def worker_slots(*, excluding: str | None = None) -> int:
    """Pool processes of every running worker except `excluding` (a hostname)."""
    stats = app.control.inspect(timeout=1).stats() or {}
    return sum(info["pool"]["max-concurrency"] for name, info in stats.items() if name != excluding)
