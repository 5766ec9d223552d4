"""The assignment rules, in-process (rolled-back transactions; runs are called, not sent)."""

from datetime import timedelta

from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context

from agents.models import Agent, Assignment
from agents.services import agent_active_chats_reconcile, assignment_run, chat_assign, chat_resolve
from agents.tasks import assignment_run_task
from core.tests.support import api_client, make_user, token_for
from conversations.models import Chat, Message


def _assigned(tenant, application) -> list[tuple[int, int]]:
    with schema_context(tenant.schema_name):
        return list(
            Chat.objects.filter(application=application, status=Chat.Status.ASSIGNED)
            .order_by("assigned_at")
            .values_list("number", "assigned_agent_id")
        )


def _waiting(tenant, application) -> list[int]:
    with schema_context(tenant.schema_name):
        return list(
            Chat.objects.filter(application=application, status=Chat.Status.WAITING)
            .order_by("number")
            .values_list("number", flat=True)
        )


def test_seven_chats_two_agents_fifo_balanced_and_resolve_serves_the_oldest(
    tenant_a, application_a, make_agent, chats, runs
):
    # given two online agents with room for 2 and 1, and seven chats arriving
    first = make_agent(max_customers=2)
    second = make_agent(max_customers=1)
    assert chats(tenant_a, application_a, 7) == [1, 2, 3, 4, 5, 6, 7]
    assert runs.scheduled == 3  # each agent created online, and the one batch that persisted the chats
    runs.scheduled = 0

    # when the assignment runs
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 3

    # then the three oldest are assigned in arrival order: 1 to the first agent (tie, lowest id), 2 to the
    # one with fewer chats, 3 to the first again (tie on 1 each; it has waited longer since its last one)
    assert _assigned(tenant_a, application_a) == [(1, first.pk), (2, second.pk), (3, first.pk)]
    assert _waiting(tenant_a, application_a) == [4, 5, 6, 7]

    # and the queue shows the other four with positions 1-4, with the /api/chats item fields
    queue = first.api.get("/api/queue")
    assert queue.status_code == 200
    body = queue.json()
    assert body["next_cursor"] is None
    assert [(item["number"], item["position"], item["status"], item["application"]) for item in body["data"]] == [
        (4, 1, "waiting", application_a.token),
        (5, 2, "waiting", application_a.token),
        (6, 3, "waiting", application_a.token),
        (7, 4, "waiting", application_a.token),
    ]
    assert set(body["data"][0]) == {
        "number", "status", "customer_id", "assigned_agent", "messages_count", "created_at", "assigned_at",
        "resolved_at", "sla", "application", "position",
    }  # fmt: skip

    # when the second agent resolves its chat
    resolved = second.api.post(f"/api/applications/{application_a.token}/chats/2/resolve")

    # then the chat is resolved, one run is scheduled, and that one task run serves the oldest waiting chat
    assert resolved.status_code == 200
    assert (resolved.json()["status"], resolved.json()["assigned_agent"]) == ("resolved", second.pk)
    assert resolved.json()["resolved_at"] is not None
    assert runs.scheduled == 1
    with schema_context(tenant_a.schema_name):
        assert assignment_run_task.apply().get() == 1
    assert _assigned(tenant_a, application_a) == [(1, first.pk), (3, first.pk), (4, second.pk)]
    assert _waiting(tenant_a, application_a) == [5, 6, 7]
    assert [item["position"] for item in first.api.get("/api/queue").json()["data"]] == [1, 2, 3]


def test_queue_pages_carry_on_the_positions(tenant_a, application_a, make_agent, chats):
    agent = make_agent(is_online=False)
    chats(tenant_a, application_a, 5)

    page_1 = agent.api.get("/api/queue?limit=2").json()
    page_2 = agent.api.get(f"/api/queue?limit=2&cursor={page_1['next_cursor']}").json()
    page_3 = agent.api.get(f"/api/queue?limit=2&cursor={page_2['next_cursor']}").json()

    assert [(i["number"], i["position"]) for i in page_1["data"] + page_2["data"] + page_3["data"]] == [
        (1, 1), (2, 2), (3, 3), (4, 4), (5, 5),
    ]  # fmt: skip
    assert page_3["next_cursor"] is None


def test_the_queue_is_fifo_across_applications(tenant_a, application_a, make_agent, chats):
    from conversations.services import application_create

    with schema_context(tenant_a.schema_name):
        other = application_create(name="Other")
    chats(tenant_a, application_a, 1)
    chats(tenant_a, other, 1)
    chats(tenant_a, application_a, 1)
    agent = make_agent(max_customers=2)

    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 2
        served = list(Chat.objects.filter(status="assigned").order_by("assigned_at").values_list("application_id", "number"))
    assert served == [(application_a.id, 1), (other.id, 1)]
    assert [(i["application"], i["number"], i["position"]) for i in agent.api.get("/api/queue").json()["data"]] == [
        (application_a.token, 2, 1)
    ]


def test_an_offline_agent_never_gets_a_chat_and_going_online_drains_up_to_its_capacity(
    tenant_a, application_a, make_agent, chats, runs
):
    # given an offline agent with room for 2, and three waiting chats
    agent = make_agent(max_customers=2, is_online=False)
    chats(tenant_a, application_a, 3)
    runs.scheduled = 0

    # then no run gives it anything
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 0
    assert _waiting(tenant_a, application_a) == [1, 2, 3]

    # when it goes online through the API
    response = agent.api.patch(f"/api/agents/{agent.pk}", {"is_online": True})
    assert response.status_code == 200
    assert response.json()["is_online"] is True
    assert runs.scheduled == 1

    # then one run fills it up to its capacity, oldest first
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 2
    assert _assigned(tenant_a, application_a) == [(1, agent.pk), (2, agent.pk)]
    assert _waiting(tenant_a, application_a) == [3]
    assert agent.api.get(f"/api/agents/{agent.pk}").json()["active_chats"] == 2

    # and going offline keeps its chats but gets it no more, even when one is resolved
    assert agent.api.patch(f"/api/agents/{agent.pk}", {"is_online": False}).status_code == 200
    assert agent.api.post(f"/api/applications/{application_a.token}/chats/1/resolve").status_code == 200
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 0
    assert _waiting(tenant_a, application_a) == [3]


def test_raising_capacity_schedules_a_run_and_lowering_it_does_not(
    tenant_a, tenant_a_admin_api, application_a, make_agent, chats, runs
):
    agent = make_agent(max_customers=1)
    chats(tenant_a, application_a, 3)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 1
    runs.scheduled = 0

    assert tenant_a_admin_api.patch(f"/api/agents/{agent.pk}", {"max_customers": 3}).status_code == 200
    assert runs.scheduled == 1
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 2
    assert tenant_a_admin_api.patch(f"/api/agents/{agent.pk}", {"max_customers": 1}).json()["active_chats"] == 3
    assert runs.scheduled == 1


def test_inactive_users_and_zero_capacity_agents_are_not_eligible_and_a_deactivated_agents_chats_return(
    tenant_a, application_a, make_agent, chats
):
    inactive = make_agent()
    paused = make_agent(max_customers=0)
    chats(tenant_a, application_a, 2)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 2
        inactive.user.is_active = False
        inactive.user.save(update_fields=["is_active"])
        assert assignment_run() == 0
        assert Agent.objects.get(pk=paused.pk).last_assigned_at is None
        assert list(Chat.objects.order_by("number").values_list("status", "assigned_agent_id")) == [
            ("waiting", None),
            ("waiting", None),
        ]
        assert list(Assignment.objects.values_list("end_reason", flat=True)) == ["requeued", "requeued"]


def test_the_check_for_chats_whose_agent_is_gone_reads_each_assigned_chat_once_before_any_analyze(
    tenant_a, application_a, make_agent
):
    """A tenant's chats that arrived since its last ANALYZE look like none to the planner. The check every run
    starts with (agents.services.assignment._REQUEUE_ORPHANS) then re-ran both of its lookups for each assigned
    chat: 326,023 buffers read at 401 assigned chats, 211 ms a run (issue 18's load). Counted in buffers, not
    timed: the same plan reads the same pages on any machine."""
    from django.db import connection

    from agents.services.assignment import _REQUEUE_ORPHANS

    agent = make_agent(max_customers=1000)
    now = timezone.now()
    with schema_context(tenant_a.schema_name):
        Chat.objects.bulk_create(
            Chat(application=application_a, number=n, status=Chat.Status.ASSIGNED, assigned_agent=agent.user,
                 assigned_at=now, customer_id=f"c{n}")  # fmt: skip
            for n in range(1, 401)
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'conversations_chat'::regclass")
            assert cursor.fetchone()[0] <= 0  # never analyzed: the planner has no statistics of these rows
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _REQUEUE_ORPHANS, [now])
            plan = cursor.fetchone()[0][0]["Plan"]
        requeued = Chat.objects.filter(status=Chat.Status.WAITING).count()

    assert requeued == 0  # the agent is active: nothing is gone
    # Linear in the assigned chats (a few pages per hundred), not quadratic (~2 per pair).
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 2_000


def test_a_chat_whose_agent_is_deleted_goes_back_to_the_queue(tenant_a, application_a, make_agent, chats):
    leaving = make_agent(max_customers=1)
    chats(tenant_a, application_a, 1)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 1
        leaving.user.delete()
        assert not Agent.objects.filter(pk=leaving.pk).exists()
        staying = make_agent(max_customers=1)
        assert assignment_run() == 1
        chat = Chat.objects.get(application=application_a, number=1)
        assert (chat.status, chat.assigned_agent_id) == ("assigned", staying.pk)
        assert list(Assignment.objects.order_by("id").values_list("agent_id", "end_reason")) == [
            (leaving.pk, "requeued"),  # the history keeps who it was
            (staying.pk, ""),
        ]


@override_settings(ASSIGNMENT_REPLY_TIMEOUT_SECONDS=60)
def test_a_chat_without_a_reply_in_time_goes_back_to_the_head_of_the_queue_for_another_agent(
    tenant_a, application_a, make_agent, chats
):
    # given two agents with room for one each; the first gets chat 1, the second chat 2
    slow = make_agent(max_customers=1)
    replying = make_agent(max_customers=1)
    chats(tenant_a, application_a, 3)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 2
        assert list(
            Chat.objects.filter(status="assigned").order_by("number").values_list("number", "assigned_agent_id")
        ) == [
            (1, slow.pk),
            (2, replying.pk),
        ]
        # the second one replied; both were assigned two minutes ago
        Message.objects.create(chat=Chat.objects.get(number=2), number=1, body="hello", sender="agent", author=replying.user)
        Chat.objects.filter(status="assigned").update(assigned_at=timezone.now() - timedelta(minutes=2))
        Message.objects.filter(number=1).update(created_at=timezone.now() - timedelta(minutes=1))
        # the second one resolves chat 2, so both have room again
        chat_resolve(chat=Chat.objects.get(number=2))

        # when a run happens
        assert assignment_run() == 2

        # then chat 1 (no reply) went back to the head of the queue and to the *other* agent, before chat 3
        assert list(
            Chat.objects.filter(status="assigned").order_by("assigned_at").values_list("number", "assigned_agent_id")
        ) == [
            (1, replying.pk),
            (3, slow.pk),
        ]
        assert list(Assignment.objects.filter(chat__number=1).order_by("id").values_list("agent_id", "end_reason")) == [
            (slow.pk, "timed_out"),
            (replying.pk, ""),
        ]


def test_manual_assignment_and_transfer_respect_capacity_and_free_the_previous_agent(
    tenant_a, tenant_a_admin_api, application_a, make_agent, chats, runs
):
    first = make_agent(max_customers=1)
    second = make_agent(max_customers=1, is_online=False)
    chats(tenant_a, application_a, 3)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 1  # chat 1 to the first agent
    runs.scheduled = 0
    url = f"/api/applications/{application_a.token}/chats"

    # refused: offline agent, full agent, unknown agent, an agent's token
    offline = tenant_a_admin_api.post(f"{url}/2/assign", {"agent_id": second.pk})
    assert (offline.status_code, offline.json()) == (409, {"detail": "The agent is offline."})
    full = tenant_a_admin_api.post(f"{url}/2/assign", {"agent_id": first.pk})
    assert (full.status_code, full.json()) == (409, {"detail": "The agent is at its max_customers."})
    unknown = tenant_a_admin_api.post(f"{url}/2/assign", {"agent_id": 999999})
    assert (unknown.status_code, unknown.json()) == (400, {"agent_id": ["No agent with this id."]})
    assert first.api.post(f"{url}/1/assign", {"agent_id": first.pk}).status_code == 403
    assert tenant_a_admin_api.post(f"{url}/99/assign", {"agent_id": first.pk}).status_code == 404
    assert _assigned(tenant_a, application_a) == [(1, first.pk)]
    assert runs.scheduled == 0

    # transfer chat 1 to the second agent once it is online
    assert second.api.patch(f"/api/agents/{second.pk}", {"is_online": True}).status_code == 200
    runs.scheduled = 0
    transfer = tenant_a_admin_api.post(f"{url}/1/assign", {"agent_id": second.pk})
    assert transfer.status_code == 200
    assert (transfer.json()["number"], transfer.json()["status"], transfer.json()["assigned_agent"]) == (
        1,
        "assigned",
        second.pk,
    )
    assert runs.scheduled == 1  # the first agent's slot is free
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 1
        assert list(Assignment.objects.order_by("id").values_list("chat__number", "agent_id", "reason", "end_reason")) == [
            (1, first.pk, "queue", "transferred"),
            (1, second.pk, "manual", ""),
            (2, first.pk, "queue", ""),
        ]
        # assigning to the agent it already has is a no-op
        assert chat_assign(chat=Chat.objects.get(number=1), agent=second).assigned_agent_id == second.pk
    assert _waiting(tenant_a, application_a) == [3]


def test_resolve_access_and_conflicts(tenant_a, tenant_b, tenant_a_admin_api, application_a, make_agent, chats, runs):
    tenant_b_admin = make_user(tenant=tenant_b, role="admin")
    owner = make_agent(max_customers=2)
    other = make_agent(max_customers=0)
    chats(tenant_a, application_a, 2)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 2
    runs.scheduled = 0
    url = f"/api/applications/{application_a.token}/chats"

    assert other.api.post(f"{url}/1/resolve").status_code == 403
    assert (
        api_client(tenant=tenant_a, token=token_for(tenant_b_admin, tenant=tenant_b)).post(f"{url}/1/resolve").status_code
        == 401
    )
    assert owner.api.post(f"{url}/1/resolve").status_code == 200
    again = owner.api.post(f"{url}/1/resolve")
    assert (again.status_code, again.json()) == (409, {"detail": "The chat is already resolved."})
    assert tenant_a_admin_api.post(f"{url}/2/resolve").json()["status"] == "resolved"
    assert tenant_a_admin_api.post(f"{url}/3/resolve").status_code == 404
    assert runs.scheduled == 2
    with schema_context(tenant_a.schema_name):
        assert list(Assignment.objects.order_by("id").values_list("end_reason", flat=True)) == ["resolved", "resolved"]


def test_the_dispatched_assignment_work_is_the_safety_net(tenant_a, application_a, make_agent, chats):
    from agents.tasks import assignment_sweep_task
    from tenants.work import KIND_TASKS

    # the dispatcher sends this task to tenants with due assignment work (tenants.work)
    assert KIND_TASKS["assignment"] == assignment_sweep_task.name

    # given a waiting chat whose trigger was lost, and a user made outside the agents API
    agent = make_agent(max_customers=1)
    elsewhere = make_user(tenant=tenant_a, role="agent")
    chats(tenant_a, application_a, 1)

    # when the sweep runs in the tenant
    with schema_context(tenant_a.schema_name):
        assert assignment_sweep_task.apply().get() == 1
        assert Agent.objects.filter(pk=elsewhere.pk, is_online=False).exists()
        assert Chat.objects.get(number=1).assigned_agent_id == agent.pk


def test_a_chat_is_never_assigned_before_it_was_created_and_times_follow_the_serving_order(
    tenant_a, application_a, make_agent, chats, runs
):
    # given three waiting chats, the last stamped by a machine whose clock runs a minute ahead
    agent = make_agent(max_customers=3)
    chats(tenant_a, application_a, 3)
    ahead = timezone.now() + timedelta(minutes=1)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(application=application_a, number=3).update(created_at=ahead)

        # when the assignment runs
        before = timezone.now()
        assert assignment_run() == 3

        # then each was assigned at or after both the run read the queue and the chat was created, in the
        # order served, and the history (stints) and the agent's last assignment carry the same times
        rows = list(Chat.objects.filter(application=application_a).order_by("number").values_list("created_at", "assigned_at"))
        assert all(assigned_at >= max(created_at, before) for created_at, assigned_at in rows)
        assert rows[0][1] < rows[1][1] < rows[2][1] and rows[2][1] == ahead
        stints = list(Assignment.objects.order_by("id").values_list("assigned_at", flat=True))
        assert stints == [assigned_at for _, assigned_at in rows]
        assert Agent.objects.get(pk=agent.pk).last_assigned_at == ahead


def test_the_sweep_recounts_active_chats_changed_behind_the_services_back(tenant_a, application_a, make_agent, chats):
    # given an agent holding two chats, and a third chat given to it by a raw UPDATE (no service)
    agent = make_agent(max_customers=5)
    chats(tenant_a, application_a, 3)
    with schema_context(tenant_a.schema_name):
        Agent.objects.filter(pk=agent.pk).update(max_customers=2)
        assert assignment_run() == 2
        Chat.objects.filter(number=3).update(status="assigned", assigned_agent=agent.user)
        assert Agent.objects.get(pk=agent.pk).active_chats == 2

        # when the sweep's recount runs
        fixed = agent_active_chats_reconcile()

        # then it fixed that agent's count, and a second recount has nothing to fix
        assert fixed == [agent.pk]
        assert Agent.objects.get(pk=agent.pk).active_chats == 3
        assert agent_active_chats_reconcile() == []


def test_a_run_and_its_settle_wait_for_postgresql_a_few_times_not_once_per_statement(
    tenant_a, application_a, make_agent, chats
):
    # Under load each round trip costs two wake-ups of processes waiting for a core (issue 18): the run is
    # pipelined (core.prepared.pipelined), its mark read and settled in its own transaction. Counted, not timed.
    from core.tests.support import postgres_round_trips
    from tenants.models import TenantWork

    agent = make_agent(max_customers=10)
    chats(tenant_a, application_a, 1)
    with schema_context(tenant_a.schema_name):
        assert assignment_run(settle=True) == 1  # every statement prepared on this connection
    chats(tenant_a, application_a, 2)
    with schema_context(tenant_a.schema_name):
        with CaptureQueriesContext(connection) as queries, postgres_round_trips() as trips:
            assert assignment_run(settle=True) == 2
        assert sorted(Chat.objects.values_list("number", "assigned_agent_id")) == [(1, agent.pk), (2, agent.pk), (3, agent.pk)]
        # nothing waits: the run's mark is gone
        assert not TenantWork.objects.filter(tenant__schema_name=tenant_a.schema_name, kind="assignment").exists()
    # ~17 statements; waits for the test's savepoint, the mark's version with the lock and the requeue, the
    # agents with the open teams, the head of the queue, what still waits (for the mark), the block's end, and
    # the commit (the savepoint's release here): 7, and a read whose answer arrives in two pieces waits twice
    # (seen once in a full suite run); 18 waits before
    assert len(queries.captured_queries) >= 15
    assert trips.count <= 9
