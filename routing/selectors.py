"""Reads of teams and of where a chat is routed."""

from collections import defaultdict
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


def routing_open_teams(*, at: datetime) -> dict[int, list[int]]:
    """The teams open at `at`, each with its agents' ids: what the assignment engine may route to. A team
    closed now is left out, so its chats wait (and are not read by the run at all)."""
    members: dict[int, list[int]] = defaultdict(list)
    open_ids = [team_id for team_id, hours in Team.objects.values_list("id", "business_hours") if hours_is_open(hours, at)]
    for team_id, agent_id in Team.agents.through.objects.filter(team_id__in=open_ids).values_list("team_id", "agent_id"):
        members[team_id].append(agent_id)
    return {team_id: members.get(team_id, []) for team_id in open_ids}


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
