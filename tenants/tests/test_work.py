"""The due-work index and its dispatcher (tenants.work): periodic work reaches only the tenants that have it.

Tests inside a rolled-back transaction intercept the dispatcher's sends (recording the tenant's schema each
was sent in) and execute them in this process, in that schema: the rows they work on are not visible to a
worker process. The settle race runs on committed data with two connections.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections, transaction
from django.db.models import F
from django.utils import timezone
from django_tenants.utils import quote_schema_name, schema_context

import agents.tasks  # noqa: F401  (registers the tasks the dispatcher names, as a worker does)
import conversations.tasks  # noqa: F401
import scheduler.tasks  # noqa: F401
from agents import services as agent_services
from agents.models import Agent, Assignment
from agents.services import schedule as assignment_schedule_module
from core.tests.support import PASSWORD
from conversations import creations
from conversations import services as conversation_services
from conversations.models import Application, Chat
from core.redis import get_redis
from scheduler.models import OutboundMessage, SchedulerSetting
from scheduler.services import outbound_message_create, scheduler_ensure, scheduler_stop, scheduler_update
from sociomile.celery import app
from tenants.models import Tenant, TenantWork
from tenants.schemas import _schema_clone_statements
from tenants.work import (
    CREATIONS_ACTIVE_KEY,
    tenant_work_dispatch,
    tenant_work_mark,
    tenant_work_marks_batched,
    tenant_work_settle,
    tenant_work_version,
)

IDLE_TENANTS = 300


class Sends:
    """The dispatcher's sends, intercepted: (schema the task was sent in, task name), in order."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []
        self.executed: list[tuple[str, str]] = []
        self.done = 0

    def __call__(self, name, *args, **kwargs):
        self.sent.append((connection.schema_name, name))

    def lose(self) -> None:
        """What was sent so far never reaches a worker."""
        self.done = len(self.sent)

    def execute(self) -> None:
        """Runs what was sent since the last call, each in its tenant's schema, as a worker would."""
        while self.done < len(self.sent):
            schema_name, name = self.sent[self.done]
            self.done += 1
            with schema_context(schema_name):
                app.tasks[name].apply(throw=True)
            self.executed.append((schema_name, name))


@pytest.fixture
def sends(monkeypatch):
    recorder = Sends()
    monkeypatch.setattr(app, "send_task", recorder)
    get_redis().delete(CREATIONS_ACTIVE_KEY)  # entries other tests' committed tenants may have left
    yield recorder
    get_redis().delete(CREATIONS_ACTIVE_KEY)


@pytest.fixture
def lost_triggers(monkeypatch):
    """Every direct trigger dropped: new waiting chats, agents online, queued creations send no task. The
    index is then the only way the work can be found."""
    monkeypatch.setattr(assignment_schedule_module, "_assignment_run_schedule", lambda schema_name: None)
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)


def _work(tenant) -> dict[str, tuple]:
    return {kind: (due_at, version) for kind, due_at, version in TenantWork.objects.filter(tenant=tenant).values_list("kind", "due_at", "version")}


def _schemas_clone(*, source: str, targets: list[str], per_transaction: int = 20) -> None:
    """schema_clone for many targets: the template's DDL is read once, and each group of copies is one
    round trip and one transaction (a few hundred schemas' locks do not fit in one)."""
    source_sql = quote_schema_name(source)
    with connection.cursor() as cursor:
        cursor.execute(f"SET search_path = {source_sql}")
        statements = ";\n".join(_schema_clone_statements(cursor=cursor, source_sql=source_sql))
        for start in range(0, len(targets), per_transaction):
            with transaction.atomic():
                cursor.execute("".join(
                    f"CREATE SCHEMA {quote_schema_name(name)}; SET search_path = {quote_schema_name(name)}; {statements};\n"
                    for name in targets[start:start + per_transaction]
                ))  # fmt: skip
        cursor.execute("SET search_path = public")
    connection.set_schema_to_public()


@pytest.fixture(scope="module")
def idle_tenants(django_db_setup, django_db_blocker):
    """300 tenants with real schemas (copies of the template, as provisioning makes them) and their outbound
    job running, but nothing to do. Made in bulk and committed, once for the module; dropped afterwards."""
    with django_db_blocker.unblock():
        started = time.monotonic()
        tenants = Tenant.objects.bulk_create([Tenant(schema_name=f"idle-{n:04d}", name=f"Idle {n}") for n in range(IDLE_TENANTS)])
        try:
            _schemas_clone(source=django_settings.TENANT_TEMPLATE_SCHEMA, targets=[tenant.schema_name for tenant in tenants])
            for tenant in tenants:
                with schema_context(tenant.schema_name):
                    scheduler_ensure()
            connection.set_schema_to_public()
            print(f"{IDLE_TENANTS} idle tenants made in {time.monotonic() - started:.1f} s")
            yield tenants
        finally:
            connection.set_schema_to_public()
            started = time.monotonic()
            names = [quote_schema_name(tenant.schema_name) for tenant in tenants]
            with connection.cursor() as cursor:
                for start in range(0, len(names), 20):  # a few hundred schemas' locks do not fit in one transaction
                    cursor.execute(f"DROP SCHEMA IF EXISTS {', '.join(names[start:start + 20])} CASCADE")
            Tenant.objects.filter(id__in=[tenant.id for tenant in tenants]).delete()
            print(f"{IDLE_TENANTS} idle tenants dropped in {time.monotonic() - started:.1f} s")


def _outbound_due_now(tenant, *, webhook_url: str, content: str) -> OutboundMessage:
    """A message pending in the tenant, and its job's run time arriving now (the countdown began one
    interval ago): the tenant's outbound work is due."""
    with schema_context(tenant.schema_name):
        scheduler_update(webhook_url=webhook_url, interval_seconds=3600)
        message = outbound_message_create(to="+15550000001", content=content)
        SchedulerSetting.objects.update(schedule_anchor_at=timezone.now() - timedelta(seconds=3600))
        tenant_work_mark(kind="outbound", due_at=timezone.now(), replace=True)
    return message


def test_the_dispatcher_sends_work_to_the_active_tenants_only(
    idle_tenants, tenant_a, tenant_b, sends, lost_triggers, settings, webhook_receiver
):
    # given 300 idle tenants, and two active ones whose direct triggers were all lost
    settings.TENANT_WORK_GRACE_SECONDS = 0
    settings.CREATIONS_SWEEP_SECONDS = 0
    idle = idle_tenants
    # A: an outbound message pending, its run due
    message = _outbound_due_now(tenant_a, webhook_url=webhook_receiver.url, content="hello")
    # B: an online agent, and two chats queued (in Redis) whose drain was never sent
    with schema_context(tenant_b.schema_name):
        application = conversation_services.application_create(name="Active B")
        agent = agent_services.agent_create(email="b-agent@example.test", password=PASSWORD, is_online=True)
        for n in range(2):
            conversation_services.chat_create(application=application, customer_id=f"c-{n}")

    # when the dispatcher runs every 0.2 s for 2 s, and the workers run what it sends
    for _ in range(10):
        tenant_work_dispatch()
        sends.execute()
        time.sleep(0.2)

    # then exactly the active tenants' work was sent and done, nothing to the idle ones
    assert sorted(sends.executed) == sorted([
        ("alpha", "scheduler.tasks.outbound_send_due_task"),
        # the agent went online (its run's task lost), then the drain's batch of chats: each a run, in that order
        ("beta", "agents.tasks.assignment_sweep_task"),
        ("beta", "conversations.tasks.creations_persist_task"),
        ("beta", "agents.tasks.assignment_sweep_task"),
    ])  # fmt: skip
    assert not {schema for schema, _ in sends.sent} & {tenant.schema_name for tenant in idle}
    with schema_context(tenant_a.schema_name):
        assert OutboundMessage.objects.get(id=message.id).status == "sent"
    assert webhook_receiver.keys() == [str(message.id)]
    with schema_context(tenant_b.schema_name):
        assert list(Chat.objects.order_by("number").values_list("number", "status", "assigned_agent_id")) == [
            (1, "assigned", agent.pk), (2, "assigned", agent.pk)
        ]  # fmt: skip
    # and what is left in the index: only B's recount of its counts, an hour ahead, and the retention of the
    # events A's send and B's chats wrote, 30 days ahead (nothing due in the window)
    assert sorted(TenantWork.objects.values_list("tenant__schema_name", "kind")) == [
        ("alpha", "events_retention"), ("beta", "counts"), ("beta", "events_retention"),
    ]  # fmt: skip
    assert get_redis().zcard(CREATIONS_ACTIVE_KEY) == 0


def test_an_idle_dispatch_sends_nothing(idle_tenants, tenant_a, tenant_b, sends):
    with schema_context(tenant_a.schema_name):
        scheduler_ensure()  # running, nothing pending

    assert tenant_work_dispatch() == {}
    assert sends.sent == []


def test_a_lost_assignment_trigger_is_found_after_the_grace(tenant_a, sends, lost_triggers, settings):
    # given a waiting chat and an agent coming online, whose run's task was lost
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="Lost")
        conversation_services.chat_create(application=application, customer_id="c")
        conversation_services.creations_persist(batch_size=100)
        agent = agent_services.agent_create(email="lost@example.test", password=PASSWORD, is_online=True)

    # when the dispatcher runs before the grace has passed, nothing is sent (the direct task may still come)
    assert tenant_work_dispatch() == {}
    # when it runs after the grace
    later = timezone.now() + timedelta(seconds=settings.TENANT_WORK_GRACE_SECONDS + 1)
    assert tenant_work_dispatch(now=later) == {"assignment": 1}
    sends.execute()

    # then the chat is assigned and the work settled
    with schema_context(tenant_a.schema_name):
        assert Chat.objects.get().assigned_agent_id == agent.pk
    assert "assignment" not in _work(tenant_a)


def test_waiting_chats_without_a_free_agent_are_looked_at_again_only_after_the_sweep_period(
    tenant_a, sends, lost_triggers, settings
):
    settings.TENANT_WORK_GRACE_SECONDS = 0
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="Busy")
        conversation_services.chat_create(application=application, customer_id="c")
        conversation_services.creations_persist(batch_size=100)

    assert tenant_work_dispatch() == {"assignment": 1}
    sends.execute()

    # no agent: the chat waits, and the tenant's work is due one sweep period later, not at every dispatch
    due_at, _ = _work(tenant_a)["assignment"]
    assert timezone.now() + timedelta(seconds=settings.ASSIGNMENT_SWEEP_SECONDS - 2) < due_at
    assert tenant_work_dispatch() == {}
    assert tenant_work_dispatch(now=due_at) == {"assignment": 1}


def test_a_reply_deadline_is_due_work(tenant_a, sends, lost_triggers, settings):
    settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS = 60
    settings.TENANT_WORK_GRACE_SECONDS = 0
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="Deadline")
        conversation_services.chat_create(application=application, customer_id="c")
        conversation_services.creations_persist(batch_size=100)
        agent_services.agent_create(email="slow@example.test", password=PASSWORD, is_online=True, max_customers=1)
    tenant_work_dispatch()
    sends.execute()
    with schema_context(tenant_a.schema_name):
        chat = Chat.objects.get()
    assert chat.status == "assigned"
    # the run left the tenant due at the chat's reply deadline
    assert _work(tenant_a)["assignment"][0] == chat.assigned_at + timedelta(seconds=60)

    # when the deadline passes without a reply, the dispatcher sends the run that requeues it
    with schema_context(tenant_a.schema_name):
        Chat.objects.update(assigned_at=chat.assigned_at - timedelta(seconds=61))
    assert tenant_work_dispatch(now=chat.assigned_at + timedelta(seconds=60)) == {"assignment": 1}
    sends.execute()
    with schema_context(tenant_a.schema_name):
        # requeued (its stint ended as timed out) and, the agent being the only one, given back to it
        assert list(Assignment.objects.order_by("id").values_list("end_reason", flat=True)) == ["timed_out", ""]


def test_a_lost_outbound_run_is_sent_again_after_the_lease(tenant_a, sends, settings, webhook_receiver):
    message = _outbound_due_now(tenant_a, webhook_url=webhook_receiver.url, content="lost run")

    # the first run's task is sent and lost (never executed)
    assert tenant_work_dispatch() == {"outbound": 1}
    sends.lose()
    assert tenant_work_dispatch() == {}  # leased: not sent again at every dispatch
    lease_over = timezone.now() + timedelta(seconds=settings.TENANT_WORK_LEASE_SECONDS + 1)
    assert tenant_work_dispatch(now=lease_over) == {"outbound": 1}
    sends.execute()

    with schema_context(tenant_a.schema_name):
        assert OutboundMessage.objects.get(id=message.id).status == "sent"
    assert "outbound" not in _work(tenant_a)


def test_an_outbound_run_is_not_sent_before_the_interval_and_a_stopped_job_gets_none(tenant_a, tenant_b, sends):
    for tenant in (tenant_a, tenant_b):
        with schema_context(tenant.schema_name):
            scheduler_update(interval_seconds=30)
            outbound_message_create(to="+15550000001", content="wait")
    with schema_context(tenant_b.schema_name):
        scheduler_stop()

    # the next run time is 30 s from the interval change: nothing before, then A's run only
    assert tenant_work_dispatch() == {}
    assert tenant_work_dispatch(now=timezone.now() + timedelta(seconds=31)) == {"outbound": 1}
    assert [schema for schema, _ in sends.sent] == ["alpha"]


def test_an_early_outbound_run_sends_nothing_and_moves_the_mark_to_the_run_time(tenant_a, sends, webhook_receiver):
    # given a mark made due now while the job's next run time is 30 s ahead (a mark pulled forward by a lease)
    with schema_context(tenant_a.schema_name):
        scheduler_update(interval_seconds=30, webhook_url=webhook_receiver.url)
        outbound_message_create(to="+15550000001", content="not yet")
        tenant_work_mark(kind="outbound", due_at=timezone.now())
        run_time = SchedulerSetting.objects.get().schedule_anchor_at + timedelta(seconds=30)

    assert tenant_work_dispatch() == {"outbound": 1}
    sends.execute()

    assert webhook_receiver.keys() == []
    assert _work(tenant_a)["outbound"][0] == run_time


def test_a_lost_drain_is_found_once_the_sweep_period_passed(tenant_a, sends, lost_triggers, settings):
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="Drain")
        numbers = [conversation_services.chat_create(application=application) for _ in range(3)]

    # within the sweep period the requests' own drain may still come: nothing sent
    assert tenant_work_dispatch() == {}
    later = timezone.now() + timedelta(seconds=settings.CREATIONS_SWEEP_SECONDS + 1)
    assert tenant_work_dispatch(now=later) == {"drain": 1}
    assert tenant_work_dispatch(now=later) == {}  # re-scored: not sent again at every dispatch
    sends.execute()

    with schema_context(tenant_a.schema_name):
        assert Application.objects.get(id=application.id).chats_count == len(numbers) == 3
    assert get_redis().zscore(CREATIONS_ACTIVE_KEY, tenant_a.schema_name) is None


def test_a_mark_made_during_a_run_keeps_the_work(tenant_a, sends, monkeypatch, settings):
    # given a run that, while it runs, sees an event mark the tenant's assignment work again
    settings.TENANT_WORK_GRACE_SECONDS = 0
    real_run = agent_services.assignment_run
    from agents import tasks as agent_tasks

    def run_with_a_concurrent_event(**kwargs):
        assigned = real_run(**kwargs)
        tenant_work_mark(kind="assignment", due_at=timezone.now())
        return assigned

    with schema_context(tenant_a.schema_name):
        agent_services.agent_create(email="m@example.test", password=PASSWORD, is_online=True)
    monkeypatch.setattr(agent_tasks, "assignment_run", run_with_a_concurrent_event)

    # when the run's task ends
    with schema_context(tenant_a.schema_name):
        agent_tasks.assignment_run_task.apply(throw=True)

    # then the mark stays, due: the next dispatch sends a run that sees the event
    assert tenant_work_dispatch() == {"assignment": 1}
    monkeypatch.setattr(agent_tasks, "assignment_run", real_run)
    sends.execute()
    assert "assignment" not in _work(tenant_a)


def test_settle_keeps_a_mark_committed_while_it_waits(make_live_tenant):
    # given a tenant whose task read version v, and a mark being made by another transaction (row locked,
    # not yet committed) when the task settles
    tenant = make_live_tenant("settle")
    with schema_context(tenant.schema_name):
        tenant_work_mark(kind="counts", due_at=timezone.now())
        version = tenant_work_version(kind="counts")
    marking, release = threading.Event(), threading.Event()

    def concurrent_mark():
        try:
            with schema_context(tenant.schema_name), transaction.atomic():
                tenant_work_mark(kind="counts", due_at=timezone.now())
                marking.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=concurrent_mark)
    thread.start()
    assert marking.wait(10)

    # when the task settles "nothing left" while that mark is in flight (it waits for the row lock)
    settled = threading.Event()

    def settle():
        try:
            with schema_context(tenant.schema_name):
                tenant_work_settle(kind="counts", version=version, next_due_at=None)
            settled.set()
        finally:
            connections.close_all()

    settler = threading.Thread(target=settle)
    settler.start()
    time.sleep(0.3)
    assert not settled.is_set()  # blocked by the uncommitted mark
    release.set()
    thread.join(10)
    settler.join(10)

    # then the mark that arrived during the run is kept
    assert settled.is_set()
    assert TenantWork.objects.filter(tenant=tenant, kind="counts", version=version + 1).count() == 1


def test_two_dispatchers_never_send_one_tenants_work_twice(make_live_tenant, monkeypatch):
    # given 4 tenants with 3 kinds of due work each (committed), and two dispatchers claiming at once
    tenants = [make_live_tenant("claim") for _ in range(4)]
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            for kind in ("assignment", "outbound", "counts"):
                tenant_work_mark(kind=kind, due_at=timezone.now() - timedelta(seconds=1))
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def record(name, *args, **kwargs):
        with lock:
            sent.append((connection.schema_name, name))

    monkeypatch.setattr(app, "send_task", record)

    def dispatch():
        try:
            barrier.wait(5)
            for _ in range(3):
                tenant_work_dispatch(limit=3)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=dispatch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    tenant_work_dispatch()  # whatever the two left (rows of other tests' tenants may have come first)

    # then each tenant's work of each kind was sent exactly once
    schema_names = {tenant.schema_name for tenant in tenants}
    mine = [item for item in sent if item[0] in schema_names]
    assert len(mine) == len(set(mine)) == 12


def test_a_drain_batch_and_a_resolve_marking_at_once_do_not_deadlock(make_live_tenant, monkeypatch):
    # Every transaction takes the tenant's work mark last, after its chat and agent row locks. Here a resolve
    # holds chat 1 (as chat_resolve does) and marks a moment later, while a drain batch persists a message of
    # chat 1 (which waits for that chat's row) and a new chat (which marks the same assignment row).
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)
    monkeypatch.setattr(assignment_schedule_module, "_assignment_run_schedule", lambda schema_name: None)
    tenant = make_live_tenant("deadlock")
    with schema_context(tenant.schema_name):
        application = conversation_services.application_create(name="Deadlock")
        conversation_services.chat_create(application=application, customer_id="first")
        conversation_services.creations_persist(batch_size=100)
        conversation_services.chat_create(application=application, customer_id="second")
        conversation_services.message_create(application=application, chat_number=1, body="hello")
    locked, errors = threading.Event(), []

    def resolve_like():
        try:
            with schema_context(tenant.schema_name), transaction.atomic():
                Chat.objects.select_for_update().get(number=1)
                locked.set()
                time.sleep(1.5)  # the drain's batch is under way meanwhile
                agent_services.assignment_schedule()
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    def drain():
        try:
            assert locked.wait(10)
            with schema_context(tenant.schema_name):
                conversation_services.creations_persist(batch_size=100)
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=resolve_like), threading.Thread(target=drain)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    with schema_context(tenant.schema_name):
        assert (Chat.objects.count(), Chat.objects.get(number=1).messages_count) == (2, 1)


def test_a_drain_waiting_for_a_resolve_never_holds_a_waiting_chat_the_engine_needs(make_live_tenant, monkeypatch):
    # The engine locks its agents, then the waiting head; a resolve holds its (assigned) chat, then updates its
    # agent. A drain batch with a message for a waiting chat and one for the resolving chat used to lock the
    # waiting chat first and then wait for the resolving one: engine -> drain -> resolve -> engine, a deadlock
    # (found by the soak test). The drain now locks its chats assigned-first, so it waits holding none that
    # the engine needs.
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)
    monkeypatch.setattr(assignment_schedule_module, "_assignment_run_schedule", lambda schema_name: None)
    tenant = make_live_tenant("cycle")
    with schema_context(tenant.schema_name):
        # chat 1 waits (the agent is offline); chat 2 is assigned by hand; then the agent comes online
        # without a run being scheduled
        agent = agent_services.agent_create(email="cycle@example.test", password=PASSWORD, max_customers=2)
        application = conversation_services.application_create(name="Cycle")
        conversation_services.chat_create(application=application, customer_id="waiting")
        conversation_services.chat_create(application=application, customer_id="assigned")
        conversation_services.creations_persist(batch_size=100)
        Agent.objects.filter(pk=agent.pk).update(is_online=True)
        agent_services.chat_assign(chat=Chat.objects.get(number=2), agent=Agent.objects.get(pk=agent.pk))
        assert list(Chat.objects.order_by("number").values_list("status", flat=True)) == ["waiting", "assigned"]
        conversation_services.message_create(application=application, chat_number=1, body="to the waiting chat")
        conversation_services.message_create(application=application, chat_number=2, body="to the resolving chat")
    locked, errors = threading.Event(), []

    def in_thread(work):
        def run():
            try:
                with schema_context(tenant.schema_name):
                    work()
            except Exception as error:
                errors.append(error)
            finally:
                connections.close_all()

        return threading.Thread(target=run)

    def resolve_like():
        with transaction.atomic():
            Chat.objects.select_for_update().get(number=2)
            locked.set()
            time.sleep(2)  # the drain and then the engine are under way meanwhile
            Agent.objects.filter(pk=agent.pk).update(active_chats=F("active_chats") - 1)

    def drain():
        assert locked.wait(10)
        conversation_services.creations_persist(batch_size=100)

    def engine():
        assert locked.wait(10)
        time.sleep(0.7)  # after the drain blocked on chat 2
        agent_services.assignment_run()

    threads = [in_thread(resolve_like), in_thread(drain), in_thread(engine)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    with schema_context(tenant.schema_name):
        chats = list(Chat.objects.order_by("number").values_list("status", "messages_count"))
        assert chats == [("assigned", 1), ("assigned", 1)]


def test_a_dead_drain_is_found_while_creations_keep_coming(tenant_a, sends, lost_triggers, settings):
    # given creations queued long ago whose drain died, and new ones still arriving now
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="Steady")
        conversation_services.chat_create(application=application)
        get_redis().zadd(CREATIONS_ACTIVE_KEY, {tenant_a.schema_name: time.time() - settings.CREATIONS_SWEEP_SECONDS - 5})
        conversation_services.chat_create(application=application)

    # when the dispatcher runs now, then a drain is sent: the tenant's entry says since when its creations
    # have waited without a drain making progress, not when the last one came
    assert tenant_work_dispatch() == {"drain": 1}
    sends.execute()
    with schema_context(tenant_a.schema_name):
        assert Application.objects.get(id=application.id).chats_count == 2


def test_each_drain_batch_is_a_heartbeat(tenant_a, settings):
    # A drain making progress re-scores the tenant: a long drain is not taken for a dead one.
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="Heartbeat")
        conversation_services.chat_create(application=application)
        get_redis().zadd(CREATIONS_ACTIVE_KEY, {tenant_a.schema_name: 0})
        token = creations.lock_acquire()
        assert creations.lock_renew(token)
        creations.lock_release(token)
    assert get_redis().zscore(CREATIONS_ACTIVE_KEY, tenant_a.schema_name) > time.time() - 5


def _work_rows(tenant) -> dict[str, tuple]:
    return {kind: (due_at, version) for kind, due_at, version in
            TenantWork.objects.filter(tenant=tenant).values_list("kind", "due_at", "version")}  # fmt: skip


def test_marks_made_together_are_one_statement_and_keep_each_kinds_earliest_time(tenant_a):
    from django.test.utils import CaptureQueriesContext

    soon, later = timezone.now() + timedelta(seconds=5), timezone.now() + timedelta(hours=1)
    with schema_context(tenant_a.schema_name):
        tenant_work_mark(kind=TenantWork.Kind.COUNTS, due_at=later)
        # given marks of two kinds made inside one batch, one kind twice
        with CaptureQueriesContext(connection) as queries:
            with tenant_work_marks_batched():
                tenant_work_mark(kind=TenantWork.Kind.ASSIGNMENT, due_at=later)
                tenant_work_mark(kind=TenantWork.Kind.ASSIGNMENT, due_at=soon)
                tenant_work_mark(kind=TenantWork.Kind.COUNTS, due_at=soon)
                assert [q for q in queries.captured_queries if "tenantwork" in q["sql"]] == []
    # then they are written once the batch ends, in one statement, as separate marks would have left them:
    # each kind at its earliest time, its version up once
    assert len([q for q in queries.captured_queries if "tenantwork" in q["sql"]]) == 1
    assert _work_rows(tenant_a) == {TenantWork.Kind.ASSIGNMENT: (soon, 1), TenantWork.Kind.COUNTS: (soon, 2)}


def test_marks_of_a_batch_that_fails_are_not_written(tenant_a):
    with schema_context(tenant_a.schema_name):
        with pytest.raises(RuntimeError), tenant_work_marks_batched():
            tenant_work_mark(kind=TenantWork.Kind.ASSIGNMENT, due_at=timezone.now())
            raise RuntimeError("the batch failed")
        # and a mark made after the batch is written at once again
        tenant_work_mark(kind=TenantWork.Kind.COUNTS, due_at=timezone.now())
    assert set(_work_rows(tenant_a)) == {TenantWork.Kind.COUNTS}
