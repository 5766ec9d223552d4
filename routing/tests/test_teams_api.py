"""Teams and application routing through the API: contract, access, and every bad input a 4xx that writes nothing."""

import pytest
from django_tenants.utils import schema_context

from routing.models import ApplicationTeam, Team

HOURS = {
    "timezone": "Asia/Jakarta",
    "weekly": [{"day": 0, "open": "09:00", "close": "17:00"}, {"day": 5, "open": "10:00", "close": "24:00"}],
    "holidays": ["2026-12-25"],
}


def _teams(tenant) -> int:
    with schema_context(tenant.schema_name):
        return Team.objects.count()


def test_an_admin_creates_reads_updates_and_deletes_a_team(tenant_a, tenant_a_admin_api, make_agent, runs):
    first, second = make_agent(), make_agent()

    created = tenant_a_admin_api.post(
        "/api/teams",
        {"name": "Billing", "agents": [second.pk, first.pk, first.pk], "business_hours": HOURS, "away_message": "Back at 9"},
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body == {
        "id": body["id"],
        "name": "Billing",
        "agents": sorted([first.pk, second.pk]),
        "business_hours": HOURS,
        "away_message": "Back at 9",
    }
    url = f"/api/teams/{body['id']}"

    # agents read; only admins write
    assert first.api.get(url).json() == body
    assert [team["id"] for team in first.api.get("/api/teams").json()["data"]] == [body["id"]]
    assert first.api.patch(url, {"name": "x"}).status_code == 403
    assert first.api.post("/api/teams", {"name": "x"}).status_code == 403
    assert first.api.delete(url).status_code == 403

    runs.scheduled = 0
    updated = tenant_a_admin_api.patch(url, {"agents": [first.pk], "business_hours": None})
    assert updated.status_code == 200
    assert (updated.json()["agents"], updated.json()["business_hours"], updated.json()["name"]) == ([first.pk], None, "Billing")
    assert runs.scheduled == 1  # a team's change may let its chats be served

    assert tenant_a_admin_api.delete(url).status_code == 204
    assert tenant_a_admin_api.get(url).status_code == 404
    assert _teams(tenant_a) == 0


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "T", "agents": [999999]}, "agents"),
        ({"name": "T", "agents": [10**20]}, "agents"),
        ({"name": "T", "agents": ["1"]}, "agents"),
        ({"name": "T", "colour": "red"}, "colour"),
        ({"name": "T", "business_hours": {"timezone": "Mars/Olympus", "weekly": []}}, "business_hours"),
        ({"name": "T", "business_hours": {"timezone": "UTC", "weekly": [{"day": 7, "open": "09:00", "close": "17:00"}]}}, "business_hours"),
        ({"name": "T", "business_hours": {"timezone": "UTC", "weekly": [{"day": 1, "open": "17:00", "close": "09:00"}]}}, "business_hours"),
        ({"name": "T", "business_hours": {"timezone": "UTC", "weekly": [{"day": 1, "open": "9:00", "close": "17:00"}]}}, "business_hours"),
        (
            {"name": "T", "business_hours": {"timezone": "UTC", "weekly": [
                {"day": 1, "open": "09:00", "close": "13:00"}, {"day": 1, "open": "12:00", "close": "17:00"}]}},
            "business_hours",
        ),
        ({"name": "T", "business_hours": {"timezone": "UTC", "weekly": [], "holidays": ["2026-02-30"]}}, "business_hours"),
        ({"name": "T", "business_hours": {"timezone": "UTC", "weekly": [], "extra": 1}}, "business_hours"),
        ({"name": "T", "business_hours": "always"}, "business_hours"),
    ],
)
def test_bad_team_input_is_a_400_naming_the_field_and_writes_nothing(tenant_a, tenant_a_admin_api, payload, field):
    response = tenant_a_admin_api.post("/api/teams", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert _teams(tenant_a) == 0


def test_an_application_is_routed_to_a_team_and_back(tenant_a, tenant_a_admin_api, application_a, make_agent, runs):
    agent = make_agent()
    team = tenant_a_admin_api.post("/api/teams", {"name": "Sales"}).json()
    url = f"/api/applications/{application_a.token}"
    assert tenant_a_admin_api.get(url).json()["team"] is None

    runs.scheduled = 0
    routed = tenant_a_admin_api.patch(url, {"team": team["id"]})
    assert routed.status_code == 200
    assert (routed.json()["team"], routed.json()["name"]) == (team["id"], "Support")
    assert runs.scheduled == 1
    assert [item["team"] for item in agent.api.get("/api/applications").json()["data"]] == [team["id"]]

    # an agent may not; an unknown team is a 400 that changes nothing
    assert agent.api.patch(url, {"team": None}).status_code == 403
    unknown = tenant_a_admin_api.patch(url, {"team": team["id"] + 1000, "name": "Renamed"})
    assert unknown.status_code == 400 and "team" in unknown.json()
    assert tenant_a_admin_api.patch(url, {"team": "1"}).status_code == 400
    assert tenant_a_admin_api.patch(url, {"team": 10**20}).status_code == 400
    assert tenant_a_admin_api.get("/api/teams/99999999999999999999").status_code == 404
    after = tenant_a_admin_api.get(url).json()
    assert (after["team"], after["name"]) == (team["id"], "Support")

    assert tenant_a_admin_api.patch(url, {"team": None}).json()["team"] is None
    with schema_context(tenant_a.schema_name):
        assert ApplicationTeam.objects.count() == 0


def test_a_team_of_another_tenant_is_not_found(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api, application_a):
    other = tenant_b_admin_api.post("/api/teams", {"name": "B's"}).json()

    assert tenant_a_admin_api.get(f"/api/teams/{other['id']}").status_code == 404
    assert tenant_a_admin_api.patch(f"/api/applications/{application_a.token}", {"team": other["id"]}).status_code == 400
    assert _teams(tenant_a) == 0


def test_deleting_an_agent_removes_it_from_its_teams(tenant_a, tenant_a_admin_api, make_agent):
    agent = make_agent()
    team = tenant_a_admin_api.post("/api/teams", {"name": "Ops", "agents": [agent.pk]}).json()

    with schema_context(tenant_a.schema_name):
        agent.user.delete()

    assert tenant_a_admin_api.get(f"/api/teams/{team['id']}").json()["agents"] == []
