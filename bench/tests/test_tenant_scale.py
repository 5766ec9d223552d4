"""The tenant_scale bench: its bulk-built tenants are what provisioning makes (else its idle tenants would cost
the system something other than real ones do), and its report says what it measured."""

import json
import os
import socket

from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context

from bench import tenant_scale
from core.models import User
from core.redis import get_redis, tenant_keys_delete
from scheduler.models import SchedulerSetting
from tenants.models import Tenant, TenantWork
from tenants.services import tenant_create


def _tables(schema: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY 1, 2",
            [schema],
        )
        return [tuple(str(value).replace(schema, "<slug>") for value in row) for row in cursor.fetchall()]


def _state(slug: str) -> dict:
    """What provisioning leaves of a tenant, its slug written `<slug>`: rows in public and in its schema, the
    due work it was given (no beat entry: tenants.work), the concurrency limit in Redis, and its tables."""
    tenant = Tenant.objects.get(schema_name=slug)
    with schema_context(slug):
        users = list(User.objects.values_list("email", "role", "is_staff", "is_superuser", "is_active", "name"))
        admin = User.objects.get()
        password_checks = admin.check_password(tenant_scale.PASSWORD)
        scheduler = list(SchedulerSetting.objects.values("id", "running", "interval_seconds", "batch_size", "webhook_url"))
    state = {
        "tenant": [tenant.concurrency, tenant.name == slug],
        "domains": list(tenant.domains.values_list("domain", "is_primary")),
        "users": users,
        "password_checks": password_checks,
        "scheduler": scheduler,
        "work": sorted(TenantWork.objects.filter(tenant=tenant).values_list("kind", flat=True)),
        "slot_limit": (get_redis().get(f"sociomile:{slug}:slots:limit") or b"").decode(),
        "tables": _tables(slug),
    }
    return json.loads(json.dumps(state, default=str).replace(slug, "<slug>"))


def test_a_bulk_built_tenant_is_what_provisioning_makes(db, django_capture_on_commit_callbacks):
    # given a tenant provisioned the product's way (its after-commit work, the Redis limit, run too)
    provisioned = "tsprovcheck"
    with django_capture_on_commit_callbacks(execute=True):
        tenant_create(name=provisioned, slug=provisioned, admin_email=f"admin@{provisioned}.test",
                      admin_password=tenant_scale.PASSWORD)  # fmt: skip
    try:
        # when the bench builds two idle tenants in bulk (on this test's connection: rolled back afterwards)
        seconds = tenant_scale.tenants_bulk_build(count=2, start=0, parallel=1)

        # then each has every row, due-work mark, Redis limit and table the provisioned one has, and nothing else
        assert seconds > 0
        assert sorted(Tenant.objects.filter(schema_name__startswith="tsidle").values_list("schema_name", flat=True)) == [
            "tsidle00000",
            "tsidle00001",
        ]
        expected = _state(provisioned)
        assert expected["slot_limit"] == "3"
        assert expected["users"] == [["admin@<slug>.test", "admin", True, True, True, "Administrator"]]
        for slug in ("tsidle00000", "tsidle00001"):
            assert _state(slug) == expected
    finally:
        for slug in (provisioned, "tsidle00000", "tsidle00001"):
            tenant_keys_delete(slug)


def test_the_broker_postgres_and_redis_are_found_by_the_port_they_listen_on():
    # given this process listening on a port
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        # then the process found on that port is this one
        assert tenant_scale._listening_pid(port) == os.getpid()
    # and nobody once it is closed
    assert tenant_scale._listening_pid(port) is None


def test_service_pids_leave_the_broker_out_when_it_is_the_redis_measured(monkeypatch):
    # given a broker URL on the Redis port (Celery on Redis, as today)
    redis_port = 6399
    monkeypatch.setenv("DATABASE_URL", "postgres://x@127.0.0.1:5999/x")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{redis_port}/0")
    monkeypatch.setattr(settings, "CELERY_BROKER_URL", f"redis://127.0.0.1:{redis_port}/1")
    asked = []
    monkeypatch.setattr(tenant_scale, "_listening_pid", lambda port: asked.append(port) or 1)

    # then only PostgreSQL and Redis are looked for
    assert tenant_scale._service_pids() == {"postgres": 1, "redis": 1}
    assert asked == [5999, redis_port]

    # and a broker of its own (RabbitMQ) is looked for on its port
    asked.clear()
    monkeypatch.setattr(settings, "CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5673//")
    assert tenant_scale._service_pids() == {"postgres": 1, "redis": 1, "broker": 1}
    assert asked == [5999, redis_port, 5673]


def _level(*, idle_cpu: float, readable_p99: float, lower_bound: bool = False) -> dict:
    return {
        "tenants": 123, "idle_tenants": 103, "active_tenants": 20, "built_idle_tenants": 100, "build_seconds": 30.0,
        "worker_queues_consumed": 123, "idle_window_seconds": 20.0,
        "idle_cpu_percent": {"web": 0.5, "worker": idle_cpu - 0.5}, "idle_cpu_percent_total": idle_cpu,
        "provisioning_median_seconds": 0.2, "create_to_readable_p50_ms": 40.0, "create_to_readable_p99_ms": readable_p99,
        "create_to_readable_is_lower_bound": lower_bound, "create_to_assigned_p50_ms": 60.0,
        "create_to_assigned_p99_ms": float("nan"), "create_to_assigned_is_lower_bound": False, "not_assigned_in_time": 0,
        "memory_loaded_mb": {"web": {"rss_mb": 100.0, "pss_mb": 80.0}, "worker": {"rss_mb": 200.0, "pss_mb": 150.0}},
        "load": {
            "offered_creates_per_second": 200, "offered_messages_per_second": 50, "seconds": 30,
            "not_readable_in_time": 3 if lower_bound else 0, "achieved_creates_per_second": 199.0,
            "achieved_messages_per_second": 50.0, "create_api_p50_ms": 5.0, "create_api_p99_ms": 30.0,
            "send_lag_p99_ms": 2.0, "create_other": 0, "message_other": 0, "readable_resolution_median_ms": 21.0,
            "api_confirmed_200": 600, "api_confirmed_other": 0,
        },
    }  # fmt: skip


def test_the_report_shows_targets_ratios_and_lower_bounds():
    # given a first level within the targets and a second one missing some, its p99 a lower bound
    levels = {"100": _level(idle_cpu=2.0, readable_p99=100.0), "1000": _level(idle_cpu=80.0, readable_p99=3000.0, lower_bound=True)}
    result = {"levels": levels, "ratios_to_first_level": tenant_scale._ratios(levels), "worker_concurrency": 4,
              "web": {"workers": 4, "threads": 4}}  # fmt: skip

    # when it is written out
    lines = tenant_scale.markdown_lines(result)

    # then each figure carries its verdict, its ratio to the first level, and a lower bound says so
    assert result["ratios_to_first_level"]["1000"]["idle_cpu_percent_total"] == 40.0
    assert result["ratios_to_first_level"]["1000"]["create_to_assigned_p99_ms"] is None  # NaN has no ratio
    row = next(line for line in lines if line.startswith("| idle CPU, all processes"))
    assert row == "| idle CPU, all processes (% of one core) | <= 5.0 | 2.0 (met) | 80.0 (**missed**) | 40.0 (**missed**) |"
    row = next(line for line in lines if line.startswith("| create -> readable p99"))
    assert row == "| create -> readable p99 ms | <= 250.0 | 100.0 (met) | >= 3000.0 (**missed**) | >= 30.0 (**missed**) |"
    row = next(line for line in lines if line.startswith("| create -> assigned p99"))
    assert row == "| create -> assigned p99 ms | <= 500.0 | nan (n/a) | nan (n/a) | n/a |"


def test_a_ratio_over_or_under_a_lower_bound_claims_only_what_it_knows():
    # given a readable p99 that is a lower bound at the second level only, close to the first level's
    levels = {"100": _level(idle_cpu=2.0, readable_p99=1000.0), "1000": _level(idle_cpu=2.0, readable_p99=1200.0, lower_bound=True)}
    result = {"levels": levels, "ratios_to_first_level": tenant_scale._ratios(levels), "worker_concurrency": 4,
              "web": {"workers": 4, "threads": 4}}  # fmt: skip

    # then its ratio (at least 1.2) is not called met
    row = next(line for line in tenant_scale.markdown_lines(result) if line.startswith("| create -> readable p99"))
    assert row.endswith("| >= 1.2 (unknown) |")

    # and with the lower bound at the first level instead, the ratio is at most what it shows
    levels["100"]["create_to_readable_is_lower_bound"], levels["1000"]["create_to_readable_is_lower_bound"] = True, False
    row = next(line for line in tenant_scale.markdown_lines(result) if line.startswith("| create -> readable p99"))
    assert row.endswith("| <= 1.2 (met) |")


def test_drain_turns_are_counted_from_the_workers_log_since_the_load_began(tmp_path):
    log = tmp_path / "scale-worker.log"
    log.write_text("... creations_persist_task[a] succeeded in 0.5s: None\n")  # before the load: not counted
    offset = log.stat().st_size
    with log.open("a") as file:
        file.write("INFO [t1] celery.app.trace: Task conversations.tasks.creations_persist_task[b] succeeded in 0.1s: None\n")
        file.write("INFO [t1] celery.app.trace: Task agents.tasks.assignment_run_task[c] succeeded in 0.9s: 1\n")
        file.write("INFO [t2] celery.app.trace: Task conversations.tasks.creations_persist_task[d] succeeded in 0.3s: None\n")
    turns = tenant_scale._drain_turns(log, offset=offset, window=2.0, active=20,
                                      cpu_before={"worker": 1.0, "postgres": 2.0}, cpu_after={"worker": 1.1, "postgres": 2.05})
    assert turns == {"count": 2, "per_second": 1.0, "task_median_ms": 200.0,
                     "cpu_ms_per_turn": {"worker": 50.0, "postgres": 25.0}, "rotation_ms": 20000.0}


def test_the_webs_cpu_per_request_counts_every_request_it_answered():
    load = {"create_202": 5990, "create_other": 10, "message_202": 1500, "message_other": 0, "api_confirmed_200": 499,
            "api_confirmed_other": 1}  # fmt: skip

    assert tenant_scale._web_cpu_ms_per_request(load, web_cpu_seconds=16.0) == 2.0
    assert tenant_scale._web_cpu_ms_per_request(dict.fromkeys(load, 0), web_cpu_seconds=1.0) is None

    # and the report shows it per level (results written before it existed show None)
    levels = {"100": {**_level(idle_cpu=2.0, readable_p99=100.0), "load_web_cpu_ms_per_request": 2.0},
              "1000": _level(idle_cpu=2.0, readable_p99=100.0)}
    result = {"levels": levels, "ratios_to_first_level": tenant_scale._ratios(levels), "worker_concurrency": 4,
              "web": {"workers": 4, "threads": 4}}  # fmt: skip
    row = next(line for line in tenant_scale.markdown_lines(result) if line.startswith("| web CPU per request"))
    assert row == "| web CPU per request under load, ms (creates, messages, reads back) |  | 2.0 | None |  |"
