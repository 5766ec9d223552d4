"""The backfill of the rollups for chats older than them (migration reports.0002, `manage.py reports_backfill`):
batch by batch, resumable, exact while the hooks keep counting, and a 503 from the summary until it is done."""

import importlib
import io
import threading
from datetime import date
from types import SimpleNamespace

from django.core.management import call_command
from django.db import connection, transaction
from django_tenants.utils import schema_context

from agents import services as agent_services
from agents.models import Assignment
from core.tests.support import nested_loop_plan_of
from conversations import services as conversation_services
from conversations.models import Application, Chat, Message
from reports.models import Backfill, Rollup
from reports.selectors import report_dashboard_get
from reports import services as reports_services
from reports.services import reports_backfill_start, reports_backfill_step, reports_rebuild
from reports.tests.timeline import recount, utc

SUMMARY = "/api/reports/summary"
ROLLUP_COLUMNS = ("bucket", "application_id", "agent_id", "metric", "seconds", "count")


def _rollups() -> list[tuple]:
    return sorted(Rollup.objects.values_list(*ROLLUP_COLUMNS))


def _first_times() -> dict[int, tuple]:
    return {chat_id: times for chat_id, *times in Chat.objects.values_list("id", "first_assigned_at", "first_response_at")}


def test_the_backfill_counts_older_chats_batch_by_batch_while_the_hooks_go_on(timeline, tenant_a, tenant_a_admin_api, clock):
    # given the tenant as migration reports.0002 leaves a schema holding chats from before the rollups: no
    # rollups, no first times, the backfill not done
    with schema_context(tenant_a.schema_name):
        first_times = _first_times()
        reports_backfill_start()
        Chat.objects.update(first_assigned_at=None, first_response_at=None)
        assert Rollup.objects.count() == 0

    # then the summary says so, rather than answering figures counted from part of the chats
    for accept in ("application/json", "text/csv"):
        response = tenant_a_admin_api.get(SUMMARY, HTTP_ACCEPT=accept)
        assert response.status_code == 503
        assert response["Retry-After"] == "60"
        assert response["Content-Type"] == "application/json"
        assert response.json()["detail"].startswith("The reports of this tenant are being built")

    # and the dashboard shows the queue and the agents now, and no charts
    with schema_context(tenant_a.schema_name):
        dashboard = report_dashboard_get(today=date(2026, 3, 12))
    assert set(dashboard) == {"pending", "queue_length", "online_agents"} and dashboard["pending"] is True

    # when the backfill runs in batches of 7 chats, with the services at work between two batches
    steps, touched = [], set()
    with schema_context(tenant_a.schema_name):
        while not (steps and steps[-1].done):
            steps.append(reports_backfill_step(batch_size=7))
            if len(steps) == 2:
                touched = _activity(cursor=steps[-1].cursor, clock=clock)

        # then every chat was counted once, from the rows or by a hook, never both: the rollups equal a
        # recount of the rows (the rebuild), and the first times are the rows' again
        assert [step.cursor for step in steps[:-1]] == sorted(step.cursor for step in steps[:-1])
        assert len(steps) >= 9 and sum(step.chats for step in steps) == Chat.objects.count() == 61
        assert Backfill.objects.get().done
        backfilled = _rollups()
        after = _first_times()
        assert {chat_id: times for chat_id, times in after.items() if chat_id not in touched} == {
            chat_id: times for chat_id, times in first_times.items() if chat_id not in touched
        }
        reports_rebuild(backfill_first_times=True)
        assert _rollups() == backfilled
        assert _first_times() == after

    # and the summary answers again, equal to a recount in plain Python
    for tz in ("UTC", "Asia/Kolkata"):
        for group_by in ("day", "agent", "application"):
            query = {"since": "2026-03-05", "until": "2026-03-13", "tz": tz, "group_by": group_by}
            response = tenant_a_admin_api.get(SUMMARY, query)
            assert response.status_code == 200
            expected = recount(tenant=tenant_a, since=date(2026, 3, 5), until=date(2026, 3, 13), tz=tz, group_by=group_by)
            summary = response.json()
            assert summary["totals"] == expected["totals"], (tz, group_by)
            # (rows by key: the summary lists applications by id, the recount by token)
            assert {row["key"]: row for row in summary["data"]} == {row["key"]: row for row in expected["data"]}


def _activity(*, cursor: int, clock) -> set[int]:
    """Between two batches: events on chats the backfill has passed (counted by the hooks) and on chats it has
    not (counted by the backfill later, the hooks leave them), and a new chat. Returns the chats touched."""
    clock.at = utc(2026, 3, 11, 9)
    open_chats = list(Chat.objects.exclude(status=Chat.Status.RESOLVED).order_by("id"))
    passed = [chat for chat in open_chats if chat.id <= cursor]
    ahead = [chat for chat in open_chats if chat.id > cursor]
    # An assigned chat ahead that has been answered: its first_response_at is missing (the rows are older
    # than the rollups) and this later reply must not set it; the backfill fills it from the first reply.
    answered_ahead = next(
        chat
        for chat in ahead
        if chat.assigned_agent_id and Message.objects.filter(chat=chat, sender="agent", is_private=False).exists()
    )
    assert passed and len(ahead) > 2
    for chat in (passed[0], answered_ahead):
        application = Application.objects.get(id=chat.application_id)
        conversation_services.message_create(application=application, chat_number=chat.number, body="more")
        if chat.assigned_agent_id:
            conversation_services.message_create(
                application=application, chat_number=chat.number, body="reply", sender="agent", author=chat.assigned_agent
            )
    conversation_services.chat_create(application=Application.objects.first(), customer_id="late")
    conversation_services.creations_persist(batch_size=100)
    late = Chat.objects.get(customer_id="late")
    resolved = [passed[-1], next(chat for chat in ahead if chat is not answered_ahead)]
    for chat in resolved:
        agent_services.chat_resolve(chat=Chat.objects.get(id=chat.id))
    return {passed[0].id, answered_ahead.id, late.id, *(chat.id for chat in resolved)}


def test_a_batch_waits_for_a_hook_that_read_the_old_cursor_and_stops_before_a_locked_chat(make_live_tenant, monkeypatch):
    monkeypatch.setattr(conversation_services, "assignment_schedule", lambda: None)  # no worker here
    tenant = make_live_tenant("backfill")
    with schema_context(tenant.schema_name):
        application = conversation_services.application_create(name="busy")
        for number in (1, 2, 3):
            _persist_chat(application, number)
        reports_backfill_start()

    # given a drain batch that counted nothing (its chat is past the cursor) and is still open
    hook_done, release = threading.Event(), threading.Event()

    def drain_batch() -> None:
        with schema_context(tenant.schema_name), transaction.atomic():
            _persist_chat(application, 4)
            hook_done.set()
            release.wait(timeout=30)
        connection.close()

    drain = threading.Thread(target=drain_batch)
    drain.start()
    assert hook_done.wait(timeout=30)
    steps = []

    def backfill() -> None:
        with schema_context(tenant.schema_name):
            steps.append(reports_backfill_step(batch_size=100))
        connection.close()

    # when a backfill batch starts: it waits for that transaction (the chat is not visible yet, and its hook
    # chose not to count it), then counts its chat from the row
    batch = threading.Thread(target=backfill)
    batch.start()
    batch.join(timeout=1)
    assert batch.is_alive()
    release.set()
    drain.join(timeout=30)
    batch.join(timeout=30)
    assert [(step.done, step.chats) for step in steps] == [(True, 4)]
    with schema_context(tenant.schema_name):
        assert Rollup.objects.get(metric="created").count == 4

        # given the backfill to run again, and another transaction holding chat 2's row
        reports_backfill_start()
        locked, release = threading.Event(), threading.Event()
        chat_2 = Chat.objects.get(number=2).id

        def holding() -> None:
            with schema_context(tenant.schema_name), transaction.atomic():
                Chat.objects.select_for_update().get(id=chat_2)
                locked.set()
                release.wait(timeout=30)
            connection.close()

        holder = threading.Thread(target=holding)
        holder.start()
        assert locked.wait(timeout=30)

        # when batches run: the first stops before chat 2 (waiting for no row), the next has nothing it can take
        first, second = reports_backfill_step(batch_size=100), reports_backfill_step(batch_size=100)
        release.set()
        holder.join(timeout=30)
        third = reports_backfill_step(batch_size=100)

        # then
        assert (first.done, first.chats, first.cursor) == (False, 1, chat_2 - 1)
        assert (second.done, second.chats, second.cursor) == (False, 0, chat_2 - 1)
        assert (third.done, third.chats) == (True, 3)
        assert Rollup.objects.get(metric="created").count == 4


def _persist_chat(application: Application, number: int) -> None:
    at = utc(2026, 3, 6, 10, number).isoformat()
    conversation_services._persist_batch(
        [{"kind": "chat", "app": application.id, "number": number, "customer_id": f"c{number}", "at": at}]
    )


def test_the_command_backfills_every_pending_tenant_and_resumes_where_it_stopped(tenant_a, tenant_b, clock, no_drain_task):
    # given two tenants with chats from before the rollups, one of them part-way through
    clock.at = utc(2026, 3, 6, 10)
    for tenant, chats in ((tenant_a, 5), (tenant_b, 3)):
        with schema_context(tenant.schema_name):
            application = conversation_services.application_create(name="old")
            for number in range(chats):
                conversation_services.chat_create(application=application, customer_id=f"c{number}")
            conversation_services.creations_persist(batch_size=100)
            reports_backfill_start()
    with schema_context(tenant_a.schema_name):
        assert reports_backfill_step(batch_size=2).chats == 2

    # when
    out = io.StringIO()
    call_command("reports_backfill", batch_size=2, stdout=out)

    # then
    assert out.getvalue().count("rollups backfilled") == 2
    for tenant, chats in ((tenant_a, 5), (tenant_b, 3)):
        with schema_context(tenant.schema_name):
            assert Backfill.objects.get().done
            assert Rollup.objects.get(metric="created").count == chats


def test_migration_0002_marks_only_schemas_holding_chats(tenant_a, clock, no_drain_task):
    migration = importlib.import_module("reports.migrations.0002_backfill")
    editor = SimpleNamespace(connection=connection)
    with schema_context(tenant_a.schema_name):
        # a new tenant's schema: nothing to backfill
        Backfill.objects.all().delete()
        migration.backfill_state(None, editor)
        assert (Backfill.objects.get().done, Backfill.objects.get().cursor) == (True, 0)

        # a schema with chats (and rollups an earlier 0001 built): emptied, and not done
        clock.at = utc(2026, 3, 6, 10)
        application = conversation_services.application_create(name="old")
        conversation_services.chat_create(application=application, customer_id="c")
        conversation_services.creations_persist(batch_size=100)
        assert Rollup.objects.exists()
        Backfill.objects.all().delete()
        migration.backfill_state(None, editor)
        assert (Backfill.objects.get().done, Backfill.objects.get().cursor) == (False, 0)
        assert not Rollup.objects.exists()


def test_a_start_waits_for_a_hook_that_read_done_before_it(make_live_tenant, monkeypatch):
    """reports_backfill_start undoes `done`: a hook that read `done` just before must not count after the start
    emptied the rollups (the backfill counts that chat too: twice)."""
    monkeypatch.setattr(conversation_services, "assignment_schedule", lambda: None)  # no worker here
    tenant = make_live_tenant("backfill")
    with schema_context(tenant.schema_name):
        application = conversation_services.application_create(name="busy")
    read, release = threading.Event(), threading.Event()
    lock = reports_services.advisory_xact_lock

    def pausing(*, name: str, shared: bool = False) -> None:
        lock(name=name, shared=shared)
        if name.startswith("reports-backfill:"):
            read.set()  # between the hook's shared lock and its upsert (which reads the state)
            release.wait(timeout=30)

    monkeypatch.setattr(reports_services, "advisory_xact_lock", pausing)

    def drain_batch() -> None:
        with schema_context(tenant.schema_name):
            _persist_chat(application, 1)
        connection.close()

    drain = threading.Thread(target=drain_batch)
    drain.start()
    assert read.wait(timeout=30)

    def start() -> None:
        with schema_context(tenant.schema_name):
            reports_backfill_start()
        connection.close()

    starter = threading.Thread(target=start)
    starter.start()
    starter.join(timeout=1)
    assert starter.is_alive()  # waiting for the hook's transaction
    release.set()
    drain.join(timeout=30)
    starter.join(timeout=30)

    with schema_context(tenant.schema_name):
        assert reports_backfill_step(batch_size=100).done
        assert Rollup.objects.get(metric="created").count == 1


def test_a_batch_reads_its_own_chats_rows_even_with_one_row_statistics(timeline, tenant_a):
    """A batch's counting statement, planned with nested loops only (what a fresh bulk load before ANALYZE gets:
    hash and merge joins off), still reads only its chats' rows of the chats, messages and assignment history, never a
    whole table: how long a batch holds the tenant's hooks follows the batch, not the tenant. Sequential scans
    off: these tables are small here, and a scan of a small table is the planner's right choice; what is
    checked is that every table is reached through the batch's range (a condition an index can serve)."""
    with schema_context(tenant_a.schema_name):
        reports_backfill_start()
        for _ in range(3):
            reports_backfill_step(batch_size=7)
        after = Backfill.objects.get().cursor
        with connection.cursor() as cursor:
            # The same statistics in every run: what autovacuum had gathered from the suite's earlier tests on
            # this schema's tables (rolled back, but counted) changed the plan from run to run, and a full run
            # once read every chat through the primary key's index. ANALYZE here: the planner knows these rows.
            cursor.execute("ANALYZE conversations_chat, conversations_message, agents_assignment")
            cursor.execute("SET LOCAL enable_seqscan = off")  # until the test's transaction ends
        with nested_loop_plan_of("INSERT INTO reports_rollup AS r") as nodes:
            step = reports_backfill_step(batch_size=7)

        batch = list(Chat.objects.filter(id__gt=after, id__lte=step.cursor).values_list("id", flat=True))
        assert len(batch) == 7 and Chat.objects.count() == 60
        own = {
            "conversations_chat": len(batch),
            "conversations_message": Message.objects.filter(chat_id__in=batch).count(),
            "agents_assignment": Assignment.objects.filter(chat_id__in=batch).count(),
        }
        touched = dict.fromkeys(own, 0)
        for node in nodes:
            if node.get("Relation Name") in own:
                loops = node["Actual Loops"]
                touched[node["Relation Name"]] += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
        # Each chat row once per reference (the batch, and one lookup per message); the messages and the
        # history at most twice (the first reply's lookup, and the messages' count).
        assert touched["conversations_chat"] <= len(batch) + own["conversations_message"]
        assert touched["conversations_message"] <= 2 * own["conversations_message"]
        assert touched["agents_assignment"] <= own["agents_assignment"]
        assert own["conversations_message"] < Message.objects.count() / 3
