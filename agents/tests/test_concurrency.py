"""Assignment through a real worker, and under concurrency: worker processes and threads assigning,
creating and resolving at once. Committed data (live tenants); checked against the assignment history."""

import random
import threading
import time
from collections import defaultdict

import pytest
from django.db import connections
from django.db.models import F
from django.test import override_settings
from django_tenants.utils import schema_context

from agents.models import Agent, Assignment
from agents.services import (
    agent_active_chats,
    agent_active_chats_reconcile,
    agent_create,
    assignment_run,
    chat_assign,
    chat_resolve,
)
from core.tests.support import api_client, PASSWORD, token_for, wait_for
from conversations import services as conversation_services
from conversations.models import Application, Chat
from conversations.services import application_create, chat_create
from core.exceptions import Conflict
from core.models import User


@pytest.mark.worker
def test_a_chat_created_through_the_api_is_persisted_and_assigned_by_the_worker(celery_worker, make_live_tenant):
    # given an online agent with room for one
    tenant = make_live_tenant("assign")
    with schema_context(tenant.schema_name):
        application = application_create(name="Live")
        agent = agent_create(email="live@example.test", password=PASSWORD, max_customers=1, is_online=True)
    client = api_client(tenant=tenant)
    agent_api = api_client(tenant=tenant, token=token_for(agent.user, tenant=tenant))
    chats_url = f"/api/applications/{application.token}/chats"

    # when two chats are created through the client API
    assert client.post(chats_url, {"customer_id": "first"}).json() == {"number": 1}
    assert client.post(chats_url, {"customer_id": "second"}).json() == {"number": 2}

    # then the worker persists them and assigns the first; the second waits at position 1
    first = wait_for(
        lambda: (body := client.get(f"{chats_url}/1").json()).get("status") == "assigned" and body, message="chat 1 assigned"
    )
    assert first["assigned_agent"] == agent.pk
    wait_for(lambda: client.get(f"{chats_url}/2").status_code == 200, message="chat 2 persisted")
    assert [(item["number"], item["position"]) for item in agent_api.get("/api/queue").json()["data"]] == [(2, 1)]

    # when the agent resolves the first, the worker serves the second at once
    assert agent_api.post(f"{chats_url}/1/resolve").json()["status"] == "resolved"
    second = wait_for(
        lambda: (body := client.get(f"{chats_url}/2").json()).get("status") == "assigned" and body, message="chat 2 assigned"
    )
    assert second["assigned_agent"] == agent.pk
    assert agent_api.get("/api/queue").json() == {"data": [], "next_cursor": None}
    assert f"[{tenant.schema_name}] celery.app.trace: Task agents.tasks.assignment_run_task" in celery_worker.log()


CAPACITIES = (1, 2, 3)
CREATORS, CHATS_PER_CREATOR = 2, 100
RESOLVERS = 3


def _hammer(tenant, *applications: Application) -> None:
    """Creators add chats (to each application in turn) while resolvers resolve random assigned chats and run
    the assignment themselves, racing the worker's runs (two processes), until every chat has been served."""
    schema = tenant.schema_name
    # Arrival order is the time a creation is accepted; two creations in the same microsecond from two
    # threads have no order to respect, so creations take turns (everything else runs concurrently).
    creation_turn = threading.Lock()
    all_served = threading.Event()
    errors: list[BaseException] = []

    def guarded(work):
        def run(k: int) -> None:
            try:
                with schema_context(schema):
                    work(k)
            except BaseException as error:  # reported by the test, not lost in a thread
                errors.append(error)
            finally:
                connections.close_all()

        return run

    @guarded
    def create(k: int) -> None:
        for i in range(CHATS_PER_CREATOR):
            with creation_turn:
                chat_create(application=applications[i % len(applications)], customer_id=f"creator{k}-{i}")

    @guarded
    def resolve(k: int) -> None:
        rng = random.Random(k)
        while not all_served.is_set():
            chat = Chat.objects.filter(application__in=applications, status=Chat.Status.ASSIGNED).order_by("?").first()
            if chat is not None:
                try:
                    chat_resolve(chat=chat)  # schedules a run on the worker
                except Conflict:
                    pass  # another resolver was first
            if rng.random() < 0.3:
                assignment_run()  # and races it from here

    threads = [threading.Thread(target=create, args=(k,)) for k in range(CREATORS)]
    threads += [threading.Thread(target=resolve, args=(k,)) for k in range(RESOLVERS)]
    for thread in threads:
        thread.start()

    def everything_served() -> bool:
        with schema_context(schema):
            total = Chat.objects.filter(application__in=applications).count()
            waiting = Chat.objects.filter(application__in=applications, status=Chat.Status.WAITING).count()
        return (total == CREATORS * CHATS_PER_CREATOR and waiting == 0) or bool(errors)

    try:
        wait_for(everything_served, timeout=90, interval=0.1, message="every chat created and served")
    finally:
        all_served.set()
        for thread in threads:
            thread.join(30)
    assert errors == []


@pytest.mark.worker
def test_under_concurrency_no_agent_ever_exceeds_its_limit_and_chats_are_served_in_arrival_order(
    celery_worker, make_live_tenant
):
    # given three online agents with room for 1, 2 and 3 chats
    tenant = make_live_tenant("hammer")
    with schema_context(tenant.schema_name):
        application = application_create(name="Load")
        capacity = {
            agent_create(email=f"agent{i}@example.test", password=PASSWORD, max_customers=limit, is_online=True).pk: limit
            for i, limit in enumerate(CAPACITIES)
        }

    # when 200 chats arrive while three threads resolve and assign and the worker's two processes assign
    _hammer(tenant, application)

    with schema_context(tenant.schema_name):
        stints = list(Assignment.objects.order_by("id").values("chat_id", "agent_id", "reason", "assigned_at", "ended_at"))
        arrival = {
            chat_id: (created_at, number)
            for chat_id, created_at, number in Chat.objects.filter(application=application).values_list(
                "id", "created_at", "number"
            )
        }

    # then every chat was assigned exactly once, by the queue
    assert len(stints) == CREATORS * CHATS_PER_CREATOR
    assert sorted(stint["chat_id"] for stint in stints) == sorted(arrival)
    assert {stint["reason"] for stint in stints} == {"queue"}

    # and in arrival order: the sequence of assignments is the sequence of arrivals
    served = [arrival[stint["chat_id"]] for stint in stints]
    assert served == sorted(served)

    # and, replaying the history, no agent ever held more chats than its limit (a slot freed before the
    # assignment that reused it, at equal times)
    events = defaultdict(list)
    for stint in stints:
        events[stint["agent_id"]].append((stint["assigned_at"], 1))
        if stint["ended_at"] is not None:
            events[stint["agent_id"]].append((stint["ended_at"], -1))
    peak = {}
    for agent_id, timeline in events.items():
        held = peak[agent_id] = 0
        for _, change in sorted(timeline):
            held += change
            peak[agent_id] = max(peak[agent_id], held)
    assert set(peak) <= set(capacity)
    assert all(peak[agent_id] <= capacity[agent_id] for agent_id in peak), (peak, capacity)
    # the limits were actually reached: the test did contend for capacity
    assert peak == capacity
    # and every agent's stored active chats is its real number of assigned chats
    with schema_context(tenant.schema_name):
        assert {agent.pk: agent.active_chats for agent in Agent.objects.all()} == {
            agent.pk: agent_active_chats(agent=agent) for agent in Agent.objects.all()
        }


def _peaks(stints: list[dict]) -> dict[int, int]:
    """Replaying the history: the most chats each agent held at once (a slot freed before the assignment that
    reused it, at equal times)."""
    events = defaultdict(list)
    for stint in stints:
        events[stint["agent_id"]].append((stint["assigned_at"], 1))
        if stint["ended_at"] is not None:
            events[stint["agent_id"]].append((stint["ended_at"], -1))
    peak = {}
    for agent_id, timeline in events.items():
        held = peak[agent_id] = 0
        for _, change in sorted(timeline):
            held += change
            peak[agent_id] = max(peak[agent_id], held)
    return peak


@pytest.mark.worker
def test_under_concurrency_with_teams_no_agent_exceeds_its_limit_and_each_team_is_served_in_arrival_order(
    celery_worker, make_live_tenant
):
    from routing.services import application_team_set, team_create

    # given two teams sharing one agent (room for 2) besides their own (room for 1 and 2), one application
    # routed to each, and an unrouted application that any of them serves
    tenant = make_live_tenant("hammer-teams")
    with schema_context(tenant.schema_name):
        first_app, second_app, any_app = (application_create(name=name) for name in ("First", "Second", "Any"))
        own_first, shared, own_second = (
            agent_create(email=f"team-agent{i}@example.test", password=PASSWORD, max_customers=limit, is_online=True)
            for i, limit in enumerate((1, 2, 2))
        )
        application_team_set(application=first_app, team=team_create(name="First", agents=[own_first, shared]))
        application_team_set(application=second_app, team=team_create(name="Second", agents=[shared, own_second]))
    capacity = {own_first.pk: 1, shared.pk: 2, own_second.pk: 2}
    members = {first_app.id: {own_first.pk, shared.pk}, second_app.id: {shared.pk, own_second.pk}}

    # when 200 chats arrive across the three applications while three threads resolve and assign and the
    # worker's two processes assign
    _hammer(tenant, first_app, second_app, any_app)

    with schema_context(tenant.schema_name):
        stints = list(Assignment.objects.order_by("id").values("chat_id", "agent_id", "reason", "assigned_at", "ended_at"))
        chats = {
            chat_id: (application_id, created_at, number)
            for chat_id, application_id, created_at, number in Chat.objects.filter(
                application__in=[first_app, second_app, any_app]
            ).values_list("id", "application_id", "created_at", "number")
        }

    # then every chat was assigned exactly once, by the queue, and a routed chat only to its team's agents
    assert len(stints) == CREATORS * CHATS_PER_CREATOR
    assert sorted(stint["chat_id"] for stint in stints) == sorted(chats)
    assert {stint["reason"] for stint in stints} == {"queue"}
    for stint in stints:
        application_id = chats[stint["chat_id"]][0]
        assert stint["agent_id"] in members.get(application_id, set(capacity)), (stint, application_id)

    # and each team served its chats in arrival order (its head is its oldest waiting chat)
    for application in (first_app, second_app):
        served = [chats[stint["chat_id"]][1:] for stint in stints if chats[stint["chat_id"]][0] == application.id]
        assert served == sorted(served)
        assert len(served) > 60

    # and no agent ever held more chats than its limit, the shared one counted once across its two teams
    peak = _peaks(stints)
    assert all(peak[agent_id] <= capacity[agent_id] for agent_id in peak), (peak, capacity)
    assert peak == capacity  # the limits were reached: the test did contend for capacity
    with schema_context(tenant.schema_name):
        assert {agent.pk: agent.active_chats for agent in Agent.objects.all()} == {
            agent.pk: agent_active_chats(agent=agent) for agent in Agent.objects.all()
        }


def test_active_chats_stay_exact_under_concurrent_assigns_resolves_transfers_and_requeues(
    make_live_tenant, monkeypatch
):
    # given four online agents with room for 2-5 chats each and 40 waiting chats (the queue runs dry halfway, so
    # transfers find room), with a 1 s reply timeout
    # (runs requeue chats nobody answered)
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)
    tenant = make_live_tenant("counts")
    schema = tenant.schema_name
    with schema_context(schema):
        application = application_create(name="Counts")
        agents = [
            agent_create(email=f"agent{i}@example.test", password=PASSWORD, max_customers=limit, is_online=True)
            for i, limit in enumerate((2, 3, 4, 5))
        ]
        for i in range(40):
            chat_create(application=application, customer_id=f"customer-{i}")
        conversation_services.creations_persist(batch_size=1000)
    errors: list[BaseException] = []

    def transferred() -> int:
        return Assignment.objects.filter(end_reason=Assignment.EndReason.TRANSFERRED).count()

    def worker(work, k: int) -> None:
        rng = random.Random(k)
        # Transfers need an agent with room while chats are assigned, which may come late on a fast machine:
        # their threads go on (for up to 20 s) until a few have happened.
        deadline = time.monotonic() + 20
        try:
            with schema_context(schema):
                iteration = 0
                while iteration < 40 or (work is transfer and transferred() < 3 and time.monotonic() < deadline):
                    iteration += 1
                    try:
                        work(rng)
                    except Conflict:
                        pass  # another thread resolved or filled it first
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    def assign(rng) -> None:
        assignment_run()

    def resolve(rng) -> None:
        # A few chats stay open, or a fast machine could resolve them all before a transfer finds room.
        if Chat.objects.filter(status__in=[Chat.Status.ASSIGNED, Chat.Status.WAITING]).count() <= 6:
            return
        chat = Chat.objects.filter(status=Chat.Status.ASSIGNED).order_by("?").first()
        if chat is not None:
            chat_resolve(chat=chat)

    def transfer(rng) -> None:
        # an assigned chat to an agent that has room right now (a resolve just freed it), or a waiting one
        chat = Chat.objects.filter(status__in=[Chat.Status.ASSIGNED, Chat.Status.WAITING]).order_by("?").first()
        agent = Agent.objects.filter(active_chats__lt=F("max_customers")).order_by("?").first()
        if chat is not None and agent is not None:
            chat_assign(chat=chat, agent=agent)

    def deactivate(rng) -> None:
        # the agent's chats go back to the queue at the next run, and it gets new ones once active again
        user = rng.choice(agents).user
        User.objects.filter(pk=user.pk).update(is_active=False)
        assignment_run()
        User.objects.filter(pk=user.pk).update(is_active=True)

    # when threads assign, resolve, transfer and requeue at once
    kinds = (assign, assign, resolve, resolve, transfer, transfer, deactivate)
    with override_settings(ASSIGNMENT_REPLY_TIMEOUT_SECONDS=1):
        threads = [threading.Thread(target=worker, args=(kind, k)) for k, kind in enumerate(kinds)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == []

    # then every agent's stored count is its real number of assigned chats, and the sweep's recount agrees
    with schema_context(schema):
        stored = dict(Agent.objects.values_list("pk", "active_chats"))
        real = {agent.pk: agent_active_chats(agent=agent) for agent in Agent.objects.all()}
        assert stored == real
        assert agent_active_chats_reconcile() == []
        # and the run did contend: chats were resolved, transferred and requeued
        reasons = set(Assignment.objects.values_list("end_reason", flat=True))
        assert {"resolved", "transferred", "requeued"} <= reasons
        assert all(stored[agent.pk] <= agent.max_customers for agent in agents)
