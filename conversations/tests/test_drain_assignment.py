"""The drain serves its own chats' assignment (issue 18): a burst of batches makes a few runs in the drain's
process, not one task per batch. Committed data (a live tenant): the runs are asked for on commit."""

import pytest
from django.db import OperationalError
from django_tenants.utils import schema_context

from agents import services as agent_services
from agents.services import assignment as assignment_module
from agents.services import schedule as schedule_module
from core.tests.support import PASSWORD
from conversations import services
from conversations.models import Chat
from tenants.models import TenantWork


@pytest.fixture
def counted(monkeypatch):
    """Counts assignment runs made in this process and run tasks sent (none is really sent)."""

    class Counted:
        def __init__(self):
            self.runs = 0
            self.tasks: list[str] = []

    counted = Counted()
    run = agent_services.assignment_run

    def counting_run(**kwargs):
        counted.runs += 1
        return run(**kwargs)

    monkeypatch.setattr(assignment_module, "assignment_run", counting_run)
    # the engine's own module and the deferral's sender both name it: patch where each calls it
    for module in (schedule_module, assignment_module):
        monkeypatch.setattr(module, "_assignment_run_schedule", lambda schema_name: counted.tasks.append(schema_name))
    monkeypatch.setattr(services, "_drain_schedule", lambda: None)  # drained below, in this process
    return counted


def _queue_chats(tenant, count: int, counted):
    """`count` chats queued (not persisted) and an online agent with room for them all; the run its going
    online asked for is not counted."""
    with schema_context(tenant.schema_name):
        application = services.application_create(name="Burst")
        agent_services.agent_create(email="burst@example.test", password=PASSWORD, max_customers=count, is_online=True)
        for i in range(count):
            services.chat_create(application=application, customer_id=f"c{i}")
    counted.tasks.clear()


def _assignment_marked(tenant) -> bool:
    return TenantWork.objects.filter(tenant=tenant, kind=TenantWork.Kind.ASSIGNMENT).exists()


def test_a_burst_of_batches_is_assigned_by_two_runs_in_the_drain_and_no_task(make_live_tenant, counted, settings):
    # given 30 queued chats and an online agent with room for all, and runs at most once a minute in a drain
    settings.CREATIONS_DRAIN_ASSIGN_EVERY_MS = 60_000
    tenant = make_live_tenant("burst")
    _queue_chats(tenant, 30, counted)

    # when one drain persists them in 6 batches
    with schema_context(tenant.schema_name):
        handled = services.creations_persist(batch_size=5)

        # then two runs served them all (after the first batch, and when the drain ended), no task was sent,
        # in arrival order, and the tenant's assignment mark is settled
        assert handled == 30
        assert counted.runs == 2
        assert counted.tasks == []
        chats = list(Chat.objects.order_by("assigned_at").values_list("number", "status"))
    assert chats == [(number, Chat.Status.ASSIGNED) for number in range(1, 31)]
    assert not _assignment_marked(tenant)


def test_without_coalescing_each_batch_is_followed_by_its_run(make_live_tenant, counted, settings):
    # given 10 queued chats, and no minimum time between runs
    settings.CREATIONS_DRAIN_ASSIGN_EVERY_MS = 0
    tenant = make_live_tenant("burst")
    _queue_chats(tenant, 10, counted)

    # when drained in batches of 5
    with schema_context(tenant.schema_name):
        services.creations_persist(batch_size=5)
        statuses = set(Chat.objects.values_list("status", flat=True))

    # then one run per batch that added chats, and nothing left for a last one
    assert counted.runs == 2
    assert counted.tasks == []
    assert statuses == {Chat.Status.ASSIGNED}


def test_a_failed_run_in_the_drain_is_sent_as_a_task_and_the_mark_stays(make_live_tenant, counted, monkeypatch, settings):
    # given queued chats, and a database error in the drain's assignment run
    settings.CREATIONS_DRAIN_ASSIGN_EVERY_MS = 60_000
    tenant = make_live_tenant("burst")
    _queue_chats(tenant, 3, counted)

    def failing_run(**kwargs):
        counted.runs += 1
        raise OperationalError("connection lost")

    monkeypatch.setattr(assignment_module, "assignment_run", failing_run)

    # when drained (the task retries a drain that raised)
    with schema_context(tenant.schema_name), pytest.raises(OperationalError):
        services.creations_persist(batch_size=10)

    # then the chats are persisted, the run is sent as the tenant's task once, and the mark (the safety net)
    # stays for the dispatcher
    with schema_context(tenant.schema_name):
        assert Chat.objects.filter(status=Chat.Status.WAITING).count() == 3
    assert counted.runs == 1
    assert counted.tasks == [tenant.schema_name]
    assert _assignment_marked(tenant)


def test_a_run_scheduled_for_another_tenant_inside_the_drain_is_not_deferred(make_live_tenant, counted):
    # given a drain of tenant A's block, inside which tenant B schedules a run
    tenant_a, tenant_b = make_live_tenant("burst"), make_live_tenant("other")
    with schema_context(tenant_a.schema_name), agent_services.assignment_runs_deferred() as deferred:
        with schema_context(tenant_b.schema_name):
            agent_services.assignment_schedule()  # outside an atomic block: commits at once

        # then B's run goes out as B's task, and A's drain has nothing to run
        assert counted.tasks == [tenant_b.schema_name]
        assert not deferred.wanted
    assert counted.runs == 0
