"""Rollup counts stay exact when transactions add to the same bucket at the same moment (committed, from
several connections: the row is created by one and incremented by the others under its lock)."""

import threading
from types import SimpleNamespace

from django.db import connection, transaction
from django_tenants.utils import schema_context

from conversations.models import Application
from reports.models import Rollup
from reports.services import report_chat_resolved, reports_rebuild
from reports.tests.timeline import utc


def _resolutions(application_id: int) -> SimpleNamespace:
    # What report_chat_resolved reads of a chat: the same bucket, agent and duration for every call.
    return SimpleNamespace(
        application_id=application_id,
        assigned_agent_id=None,
        created_at=utc(2026, 3, 6, 10, 1),
        resolved_at=utc(2026, 3, 6, 10, 3, 30),
    )


def test_concurrent_transactions_adding_to_one_bucket_stay_exact(make_live_tenant):
    tenant = make_live_tenant("reports")
    with schema_context(tenant.schema_name):
        application_id = Application.objects.create(name="busy").id
    threads_count, per_thread = 6, 20
    first_holds = threading.Event()
    release_first = threading.Event()
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def worker(index: int) -> None:
        try:
            with schema_context(tenant.schema_name):
                if index == 0:
                    # One transaction creates the bucket's rows and holds them uncommitted while the others
                    # arrive: their inserts conflict and wait on the row, then add to it.
                    with transaction.atomic():
                        report_chat_resolved(chat=_resolutions(application_id))
                        first_holds.set()
                        start.wait(timeout=30)
                        release_first.wait(timeout=30)
                    remaining = per_thread - 1
                else:
                    first_holds.wait(timeout=30)
                    start.wait(timeout=30)
                    remaining = per_thread
                for _ in range(remaining):
                    with transaction.atomic():
                        report_chat_resolved(chat=_resolutions(application_id))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    first_holds.wait(timeout=30)
    release_first.set()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with schema_context(tenant.schema_name):
        rows = sorted(Rollup.objects.values_list("metric", "seconds", "count"))
    assert rows == [("resolution", 150, threads_count * per_thread), ("resolved", 0, threads_count * per_thread)]


def test_rebuild_waits_for_a_transaction_counting_and_loses_nothing(make_live_tenant):
    """A rebuild while a hook's transaction is open: it waits for it, and its recount includes it."""
    tenant = make_live_tenant("reports")
    with schema_context(tenant.schema_name):
        application_id = Application.objects.create(name="busy").id
    counted = threading.Event()
    release = threading.Event()

    def counting() -> None:
        with schema_context(tenant.schema_name):
            with transaction.atomic():
                report_chat_resolved(chat=_resolutions(application_id))
                counted.set()
                release.wait(timeout=30)
        connection.close()

    thread = threading.Thread(target=counting)
    thread.start()
    counted.wait(timeout=30)
    rebuilt = []

    def rebuilding() -> None:
        with schema_context(tenant.schema_name):
            rebuilt.append(reports_rebuild())
        connection.close()

    rebuild_thread = threading.Thread(target=rebuilding)
    rebuild_thread.start()
    rebuild_thread.join(timeout=1)
    assert rebuild_thread.is_alive()  # waiting for the counting transaction
    release.set()
    thread.join(timeout=30)
    rebuild_thread.join(timeout=30)
    # The hook counted a resolution of a chat that is not in the rows (no chat row here), so the recount,
    # which sees only rows, has nothing: what matters is that it ran after the hook's commit, not before
    # (before, the hook's rows would have survived the DELETE).
    assert rebuilt == [0]
    with schema_context(tenant.schema_name):
        assert Rollup.objects.count() == 0
