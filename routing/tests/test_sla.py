"""SLA policies: the API, due times on arriving chats (frozen clock, business time), first response and
resolution, `?sla=` filters, and a breach recorded once even with two concurrent runs. Also the away message."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections
from django.utils import timezone as django_timezone
from django_tenants.utils import schema_context

from agents.services import chat_resolve
from conversations.models import Chat, Message
from conversations.services import application_create, chat_create, creations_persist, message_create
from core.tests.support import wait_for
from events.models import Event
from routing.models import ChatSla, SlaPolicy
from routing.services import application_team_set, sla_policy_create, team_create
from routing.sla import sla_breaches_check, sla_breaches_record, sla_next_due_at
from tenants.models import TenantWork

JAKARTA_WEEKDAYS = {
    "timezone": "Asia/Jakarta",
    "weekly": [{"day": day, "open": "09:00", "close": "17:00"} for day in range(5)],
    "holidays": ["2026-12-07"],
}
FRIDAY_1630_JAKARTA = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_sla_policies_api(tenant_a, tenant_a_admin_api, application_a, make_agent):
    agent = make_agent()
    with schema_context(tenant_a.schema_name):
        other = application_create(name="Other")

    created = tenant_a_admin_api.post(
        "/api/sla-policies",
        {"name": "Gold", "first_response_seconds": 300, "resolution_seconds": 3600, "applications": [application_a.token]},
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body == {
        "id": body["id"], "name": "Gold", "first_response_seconds": 300, "resolution_seconds": 3600,
        "applications": [application_a.token],
    }
    url = f"/api/sla-policies/{body['id']}"
    assert agent.api.get("/api/sla-policies").json()["data"] == [body]
    assert agent.api.patch(url, {"name": "x"}).status_code == 403

    patched = tenant_a_admin_api.patch(url, {"resolution_seconds": 7200, "applications": [other.token]})
    assert (patched.status_code, patched.json()["resolution_seconds"], patched.json()["applications"]) == (200, 7200, [other.token])
    assert patched.json()["name"] == "Gold"

    # a second policy that lists an application takes it over
    second = tenant_a_admin_api.post(
        "/api/sla-policies", {"name": "Silver", "first_response_seconds": 60, "resolution_seconds": 60, "applications": [other.token]}
    ).json()
    assert tenant_a_admin_api.get(url).json()["applications"] == []
    assert second["applications"] == [other.token]

    for bad in (
        {"name": "B", "first_response_seconds": 0, "resolution_seconds": 60},
        {"name": "B", "first_response_seconds": "60", "resolution_seconds": 60},
        {"name": "B", "first_response_seconds": 60},
        {"name": "B", "first_response_seconds": 60, "resolution_seconds": 60, "applications": ["nope"]},
        {"name": "B", "first_response_seconds": 60, "resolution_seconds": 60, "tier": 1},
    ):
        response = tenant_a_admin_api.post("/api/sla-policies", bad, format="json")
        assert response.status_code == 400, bad
    assert tenant_a_admin_api.patch(url, {"applications": ["nope"]}).status_code == 400
    assert tenant_a_admin_api.patch(url, {"first_response_seconds": -5}).status_code == 400
    with schema_context(tenant_a.schema_name):
        assert SlaPolicy.objects.count() == 2

    assert tenant_a_admin_api.delete(url).status_code == 204
    assert tenant_a_admin_api.get(url).status_code == 404


def test_a_chat_arriving_under_a_policy_gets_due_times_in_its_teams_business_time(
    tenant_a, application_a, make_agent, chats, runs, monkeypatch
):
    # given a team open on weekdays 09-17 Jakarta time (Monday 7th a holiday) routing the application, and a
    # policy of 1 business hour to answer and 8 to resolve
    member = make_agent(is_online=False)
    with schema_context(tenant_a.schema_name):
        team = team_create(name="Day", agents=[member], business_hours=JAKARTA_WEEKDAYS)
        application_team_set(application=application_a, team=team)
        sla_policy_create(name="Gold", first_response_seconds=3600, resolution_seconds=8 * 3600, applications=[application_a])

    # when a chat arrives on Friday at 16:30 in Jakarta (the clock frozen there)
    monkeypatch.setattr(django_timezone, "now", lambda: FRIDAY_1630_JAKARTA)
    chats(tenant_a, application_a, 1)
    monkeypatch.undo()

    # then its first response is due Tuesday 09:30 (30 min Friday, the weekend and the holiday skipped) and
    # its resolution Tuesday 16:30
    first_due, resolution_due = datetime(2026, 12, 8, 2, 30, tzinfo=UTC), datetime(2026, 12, 8, 9, 30, tzinfo=UTC)
    item = member.api.get(f"/api/applications/{application_a.token}/chats/1").json()
    assert item["sla"] == {"first_response_due_at": _iso(first_due), "resolution_due_at": _iso(resolution_due), "breached": False}
    assert member.api.get("/api/chats").json()["data"][0]["sla"] == item["sla"]
    # and the tenant's sla work is due at the first due time: found by due time, not by a scan
    with schema_context(tenant_a.schema_name):
        assert TenantWork.objects.get(tenant=tenant_a, kind="sla").due_at == first_due


def test_an_application_under_no_policy_has_no_sla(tenant_a, application_a, make_agent, chats, runs):
    agent = make_agent()
    chats(tenant_a, application_a, 1)
    assert agent.api.get(f"/api/applications/{application_a.token}/chats/1").json()["sla"] is None


@pytest.fixture
def gold(tenant_a, application_a, make_agent, chats, runs):
    """A 60 s / 600 s calendar-time policy on the application; chats 1-3 arrived (agent online, room for 3)."""
    agent = make_agent(max_customers=3)
    with schema_context(tenant_a.schema_name):
        sla_policy_create(name="Gold", first_response_seconds=60, resolution_seconds=600, applications=[application_a])
    chats(tenant_a, application_a, 3)
    with schema_context(tenant_a.schema_name):
        from agents.services import assignment_run

        assignment_run()
        arrived = {number: ChatSla.objects.get(chat__application=application_a, chat__number=number) for number in (1, 2, 3)}
    return agent, arrived


def test_a_first_agent_reply_meets_the_first_response_but_a_private_note_does_not(tenant_a, application_a, gold):
    agent, arrived = gold
    with schema_context(tenant_a.schema_name):
        # chat 1: a private note only; chat 2: a real reply; chat 3: resolved in time
        message_create(application=application_a, chat_number=1, body="note", sender="agent", author=agent.user, is_private=True)
        message_create(application=application_a, chat_number=2, body="Hello!", sender="agent", author=agent.user)
        creations_persist(batch_size=1000)
        chat_resolve(chat=Chat.objects.get(application=application_a, number=3))
        assert ChatSla.objects.get(pk=arrived[1].pk).first_response_at is None
        assert ChatSla.objects.get(pk=arrived[2].pk).first_response_at is not None

        # when the first-response due time has passed
        after_first_due = arrived[1].first_response_due_at + timedelta(seconds=1)
        breached = sla_breaches_record(now=after_first_due)

        # then only chat 1 breached, with one event
        assert breached == [arrived[1].pk]
        assert list(Event.objects.filter(type="chat.sla_breached").values_list("chat_id", flat=True)) == [arrived[1].pk]
        # and again: nothing more
        assert sla_breaches_record(now=after_first_due) == []

        # the next due time is chat 2's resolution (chat 1 breached, chat 3 resolved)
        assert sla_next_due_at(now=after_first_due) == arrived[2].resolution_due_at

    # the filters
    assert [item["number"] for item in agent.api.get("/api/chats?sla=breached").json()["data"]] == [1]
    assert agent.api.get(f"/api/applications/{application_a.token}/chats/1").json()["sla"]["breached"] is True
    assert [item["number"] for item in agent.api.get("/api/chats?sla=due_soon").json()["data"]] == [2]  # within 900 s
    assert agent.api.get("/api/chats?sla=late").status_code == 400


def test_the_dispatchers_task_settles_the_mark_at_the_next_due_time(tenant_a, application_a, gold):
    _, arrived = gold
    with schema_context(tenant_a.schema_name):
        assert sla_breaches_check() == []  # nothing due yet
        assert TenantWork.objects.get(tenant=tenant_a, kind="sla").due_at == arrived[1].first_response_due_at


@pytest.mark.worker
def test_a_breach_is_recorded_once_with_two_concurrent_runs(make_live_tenant):
    # given 30 chats past their first-response due time (committed data: two connections race)
    tenant = make_live_tenant("sla-race")
    with schema_context(tenant.schema_name):
        application = application_create(name="Race")
        sla_policy_create(name="Fast", first_response_seconds=1, resolution_seconds=3600, applications=[application])
        for i in range(30):
            chat_create(application=application, customer_id=f"c{i}")
        creations_persist(batch_size=1000)
        # a worker left running by an earlier test may be the one draining them
        wait_for(lambda: ChatSla.objects.count() == 30, message="30 chats with an SLA")
        later = max(ChatSla.objects.values_list("first_response_due_at", flat=True)) + timedelta(seconds=1)

    # when two runs record breaches at the same moment
    results, errors = [], []
    start = threading.Barrier(2)

    def run():
        try:
            with schema_context(tenant.schema_name):
                start.wait()
                results.append(sla_breaches_record(now=later))
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # then each chat breached once, by one of the runs, with exactly one event
    assert errors == []
    assert sorted(results[0] + results[1]) == sorted(set(results[0] + results[1]))
    assert len(results[0]) + len(results[1]) == 30
    with schema_context(tenant.schema_name):
        assert Event.objects.filter(type="chat.sla_breached").count() == 30
        assert ChatSla.objects.filter(breached=True).count() == 30
        # and the report counts each breach once, in the transaction that recorded it
        from reports.models import Rollup

        assert sum(Rollup.objects.filter(metric="sla_breached").values_list("count", flat=True)) == 30


def test_a_chat_arriving_while_its_team_is_closed_gets_one_away_message(
    tenant_a, application_a, make_agent, chats, runs, django_capture_on_commit_callbacks
):
    member = make_agent()
    with schema_context(tenant_a.schema_name):
        team = team_create(name="Day", agents=[member], business_hours={"timezone": "UTC", "weekly": []}, away_message="We're closed")
        application_team_set(application=application_a, team=team)
        other = application_create(name="Open")  # unrouted: never an away message
    with django_capture_on_commit_callbacks(execute=True):  # the away messages are queued once a batch commits
        chats(tenant_a, application_a, 2)
        chats(tenant_a, other, 1)

    with schema_context(tenant_a.schema_name):
        creations_persist(batch_size=1000)
        creations_persist(batch_size=1000)  # a second drain: nothing queued twice
        away = list(Message.objects.filter(sender="system").order_by("chat__number").values_list("chat__application_id", "chat__number", "body", "number"))
        assert away == [(application_a.id, 1, "We're closed", 1), (application_a.id, 2, "We're closed", 1)]
        assert Event.objects.filter(type="message.created", data__sender="system").count() == 2


def test_the_dispatcher_sends_the_sla_check_to_the_tenant_whose_mark_is_due():
    from routing.tasks import sla_breaches_check_task
    from tenants.work import KIND_TASKS

    assert KIND_TASKS["sla"] == sla_breaches_check_task.name
