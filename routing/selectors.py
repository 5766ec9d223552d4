"""Reads of teams and of where a chat is routed."""

import json
from datetime import datetime

from django.db.models import QuerySet

from conversations.models import Chat
from core.prepared import prepared_cursor
from routing.hours import hours_is_open, hours_next_open
from routing.models import ApplicationTeam, ChatTeam, SlaPolicy, Team


def team_list() -> QuerySet[Team]:
    return Team.objects.prefetch_related("agents")


def team_get(*, team_id: int) -> Team | None:
    return team_list().filter(id=team_id).first()


def chat_team_get(*, chat: Chat) -> Team | None:
    """The team a chat is routed to: the one it was transferred to, else its application's, else none."""
    route = ChatTeam.objects.select_related("team").filter(chat_id=chat.id).first()
    if route is not None:
        return route.team
    route = ApplicationTeam.objects.select_related("team").filter(application_id=chat.application_id).first()
    return route.team if route is not None else None


# Every team with its hours and its agents (a tenant has a handful of teams): one prepared statement, read at
# every assignment run (the ORM's two queries were compiled at each run: ~7 % of a drain turn's worker CPU).
_TEAMS_WITH_AGENTS = f"""
SELECT team.id, team.business_hours,
       COALESCE(array_agg(member.agent_id ORDER BY member.agent_id) FILTER (WHERE member.agent_id IS NOT NULL), '{{}}')
FROM routing_team AS team LEFT JOIN {Team.agents.through._meta.db_table} AS member ON member.team_id = team.id
GROUP BY team.id ORDER BY team.id
"""


def routing_open_teams(*, at: datetime) -> dict[int, list[int]]:
    """The teams open at `at`, each with its agents' ids: what the assignment engine may route to. A team
    closed now is left out, so its chats wait (and are not read by the run at all)."""
    with prepared_cursor() as cursor:
        cursor.execute(_TEAMS_WITH_AGENTS)
        teams = cursor.fetchall()
    open_teams = {}
    for team_id, hours, agent_ids in teams:
        hours = json.loads(hours) if isinstance(hours, str) else hours  # Django reads jsonb as text
        if hours_is_open(hours, at):
            open_teams[team_id] = list(agent_ids)
    return open_teams


# The teams that waiting chats are routed to (a transfer's team first, else the application's; NULL: none).
_WAITING_TEAMS = """
SELECT DISTINCT COALESCE(chat_team.team_id, app_team.team_id)
FROM conversations_chat AS chat
LEFT JOIN routing_chatteam AS chat_team ON chat_team.chat_id = chat.id
LEFT JOIN routing_applicationteam AS app_team ON app_team.application_id = chat.application_id
WHERE chat.status = 'waiting'
"""


def routing_waiting_due(*, at: datetime, sweep_at: datetime) -> datetime | None:
    """When the assignment must look again at the waiting chats, with no event to trigger it: `sweep_at` if
    any could be served now (routed to no team, or to an open one: they wait for a free agent); else the
    earliest next opening of the closed teams they wait for (a due time, not a periodic look); None if
    nothing waits (or only for teams that never open)."""
    with prepared_cursor() as cursor:
        cursor.execute(_WAITING_TEAMS)
        team_ids = [row[0] for row in cursor.fetchall()]
    if not team_ids:
        return None
    if None in team_ids:
        return sweep_at
    openings = []
    for hours in Team.objects.filter(id__in=team_ids).values_list("business_hours", flat=True):
        opening = hours_next_open(hours, at)
        if opening == at:
            return sweep_at
        if opening is not None:
            openings.append(opening)
    return min(openings, default=None)


def sla_policy_list() -> QuerySet[SlaPolicy]:
    return SlaPolicy.objects.prefetch_related("application_links__application")


def sla_policy_get(*, policy_id: int) -> SlaPolicy | None:
    return sla_policy_list().filter(id=policy_id).first()
