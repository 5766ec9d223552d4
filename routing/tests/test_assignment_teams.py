"""The assignment engine with teams, in-process (rolled-back transactions; runs are called, not sent)."""

from datetime import UTC, datetime, timedelta

from django_tenants.utils import schema_context

from agents.services import assignment_next_due_at, assignment_run
from conversations.models import Chat
from conversations.services import application_create
from routing.models import Team
from routing.services import application_team_set, team_create, team_update

ALWAYS_CLOSED = {"timezone": "UTC", "weekly": []}


def _served(tenant, application) -> dict[int, int | None]:
    with schema_context(tenant.schema_name):
        return dict(Chat.objects.filter(application=application).values_list("number", "assigned_agent_id"))


def test_a_routed_applications_chats_go_only_to_its_team_fifo_and_unrouted_ones_to_anyone(
    tenant_a, application_a, make_agent, chats, runs
):
    # given a team with one agent (room for 2), and an outsider agent (room for 3)
    member = make_agent(max_customers=2)
    outsider = make_agent(max_customers=3)
    with schema_context(tenant_a.schema_name):
        team = team_create(name="Billing", agents=[member])
        application_team_set(application=application_a, team=team)
        other = application_create(name="Other")

    # when 4 chats of the routed application and 2 of the other arrive, and the engine runs
    chats(tenant_a, application_a, 4)
    chats(tenant_a, other, 2)
    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 4

    # then the team's member got the routed application's two oldest chats; the others wait for it
    assert _served(tenant_a, application_a) == {1: member.pk, 2: member.pk, 3: None, 4: None}
    # and the unrouted chats went to the outsider (the member was full)
    assert _served(tenant_a, other) == {1: outsider.pk, 2: outsider.pk}


def test_a_team_with_no_room_does_not_block_the_chats_behind_it(tenant_a, application_a, make_agent, chats, runs):
    # given a team with no online agent holding the oldest chats, and an online agent for everything else
    offline = make_agent(is_online=False)
    anyone = make_agent(max_customers=5)
    with schema_context(tenant_a.schema_name):
        application_team_set(application=application_a, team=team_create(name="Night", agents=[offline]))
        other = application_create(name="Other")
    chats(tenant_a, application_a, 3)
    chats(tenant_a, other, 2)

    with schema_context(tenant_a.schema_name):
        assert assignment_run(batch_size=2) == 2

    assert _served(tenant_a, application_a) == {1: None, 2: None, 3: None}
    assert _served(tenant_a, other) == {1: anyone.pk, 2: anyone.pk}


def test_a_closed_teams_chats_wait_until_it_opens_and_the_work_is_due_at_its_opening(
    tenant_a, application_a, make_agent, chats, runs
):
    member = make_agent(max_customers=5)
    with schema_context(tenant_a.schema_name):
        team = team_create(name="Day", agents=[member], business_hours=ALWAYS_CLOSED)
        application_team_set(application=application_a, team=team)
    chats(tenant_a, application_a, 2)

    with schema_context(tenant_a.schema_name):
        # closed: nothing assigned, and no periodic look: the work is due when the team opens (never here)
        assert assignment_run() == 0
        assert assignment_next_due_at(now=datetime.now(UTC)) is None

        # open on Mondays 09:00-17:00 UTC: on a Sunday the work is due at Monday 09:00
        team_update(team=team, business_hours={"timezone": "UTC", "weekly": [{"day": 0, "open": "09:00", "close": "17:00"}]})
        sunday = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
        assert assignment_next_due_at(now=sunday) == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
        # while open, waiting chats are looked at again by the ordinary safety net
        monday = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
        assert monday < assignment_next_due_at(now=monday) <= monday + timedelta(minutes=10)

        # always open now: they are served
        team_update(team=team, business_hours=None)
        assert assignment_run() == 2
    assert _served(tenant_a, application_a) == {1: member.pk, 2: member.pk}


def test_deleting_a_team_lets_its_chats_go_to_any_agent(tenant_a, application_a, make_agent, chats, runs):
    anyone = make_agent()
    with schema_context(tenant_a.schema_name):
        team = team_create(name="Empty")
        application_team_set(application=application_a, team=team)
    chats(tenant_a, application_a, 1)

    with schema_context(tenant_a.schema_name):
        assert assignment_run() == 0
        Team.objects.get(pk=team.pk).delete()
        assert assignment_run() == 1
    assert _served(tenant_a, application_a) == {1: anyone.pk}
