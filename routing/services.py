"""Writes of teams, application routing and transfers (PRODUCT.md, "Teams, business hours and SLA").

Every change that can let a waiting chat be assigned (a team's agents or hours, an application's team, a
chat moved back to a queue) schedules an assignment run, as agents going online do. Changes to what the
engine reads take the tenant's assignment lock first (conversations.lock_objects), so a run sees a team
either before or after an edit, never half of it.
"""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.models import Agent, Assignment
from agents.services.assignment import chat_assign
from agents.services.schedule import assignment_schedule
from audit.services import audit_record
from conversations.access import chat_access_check
from conversations.lock_objects import assignment_lock, chat_lock
from conversations.models import Application, Chat, Message
from conversations.services import message_create
from core.exceptions import Conflict
from core.models import User
from events.services import CHAT_TRANSFERRED, events_record_chats
from routing.models import ApplicationSla, ApplicationTeam, ChatTeam, SlaPolicy, Team
from routing.selectors import chat_team_get


def team_create(*, name: str, agents: list[Agent] = (), business_hours: dict | None = None, away_message: str = "") -> Team:
    """Creates a team; its agents serve the chats routed to it from the next run on."""
    with transaction.atomic():
        assignment_lock()
        team = Team.objects.create(name=name, business_hours=business_hours, away_message=away_message)
        team.agents.set(agents)
    return team


def team_update(*, team: Team, **changes) -> Team:
    """Changes a team's name, agents, business hours or away message; a run follows (agents added, or the
    hours opened, may serve its waiting chats at once)."""
    with transaction.atomic():
        assignment_lock()
        agents = changes.pop("agents", None)
        for field, value in changes.items():
            setattr(team, field, value)
        if changes:
            team.save(update_fields=[*changes, "updated_at"])
        if agents is not None:
            team.agents.set(agents)
        assignment_schedule()
    return team


def team_delete(*, team: Team) -> None:
    """Deletes a team. Its applications and transferred chats are no longer routed (their rows go with it,
    by cascade): their waiting chats go to any agent, from the run this schedules."""
    with transaction.atomic():
        assignment_lock()
        team.delete()
        assignment_schedule()


def application_team_set(*, application: Application, team: Team | None) -> None:
    """Routes an application's chats to `team` (None: to any agent), waiting ones included."""
    with transaction.atomic():
        assignment_lock()
        if team is None:
            ApplicationTeam.objects.filter(application=application).delete()
        else:
            ApplicationTeam.objects.update_or_create(application=application, defaults={"team": team})
        assignment_schedule()


def chat_transfer(*, chat: Chat, by: User, agent: Agent | None = None, team: Team | None = None, note: str = "") -> Chat:
    """Moves a chat to an agent or back to a team's queue, with an optional note kept as a private message.

    The chat's assigned agent or an admin (PermissionDenied otherwise, checked on the locked row). To an
    agent: the manual assignment's rules (online, below its max_customers: Conflict), and a member of the
    chat's team if it is routed (ValidationError). To a team: the chat waits again, at its original place
    (its `created_at` is the queue's order), routed to that team from now on; its agent's slot is freed.
    `chat.transferred` is recorded in the same transaction (a waiting chat given to an agent is an
    assignment: `chat.assigned`).
    """
    if (agent is None) == (team is None):
        raise ValidationError({"non_field_errors": ["Give exactly one of agent_id and team_id."]})
    with transaction.atomic():
        assignment_lock()
        chat = chat_lock(chat_id=chat.id)
        chat_access_check(chat=chat, user=by, action="transfer it")
        if chat.status == Chat.Status.RESOLVED:
            raise Conflict("The chat is resolved.")
        if agent is not None:
            routed_to = chat_team_get(chat=chat)
            if routed_to is not None and not routed_to.agents.filter(pk=agent.pk).exists():
                raise ValidationError({"agent_id": ["The agent is not in the chat's team."]})
            if chat.status == Chat.Status.ASSIGNED and chat.assigned_agent_id == agent.pk:
                raise Conflict("The chat is already assigned to this agent.")
            chat = chat_assign(chat=chat, agent=agent)
        else:
            _chat_requeue_to_team(chat=chat, team=team)
            audit_record(action="chat.transferred", target=chat, changes={"team": team.pk})
        if note:
            # Queued (Redis) last, once every check passed: a refusal above queues nothing. The drain writes
            # its row and its message.created event (private: only endpoints that opt in).
            message_create(
                application=chat.application,
                chat_number=chat.number,
                body=note,
                sender=Message.Sender.AGENT,
                author=by,
                is_private=True,
            )
    return chat


def _chat_requeue_to_team(*, chat: Chat, team: Team) -> None:
    ChatTeam.objects.update_or_create(chat=chat, defaults={"team": team})
    if chat.status == Chat.Status.ASSIGNED:
        now = timezone.now()
        previous = chat.assigned_agent_id
        chat.status = Chat.Status.WAITING
        chat.assigned_agent = None
        chat.assigned_at = None
        chat.save(update_fields=["status", "assigned_agent", "assigned_at", "updated_at"])
        Assignment.objects.filter(chat=chat, ended_at__isnull=True).update(
            ended_at=now, end_reason=Assignment.EndReason.TRANSFERRED
        )
        if previous is not None:
            # After the chat's row, in the lock order: its agent's slot is free again.
            Agent.objects.filter(pk=previous).update(active_chats=F("active_chats") - 1)
    assignment_schedule()
    events_record_chats(type=CHAT_TRANSFERRED, chat_ids=[chat.id])


# --- SLA policies ----------------------------------------------------------------------------------------------


def _policy_applications_set(*, policy: SlaPolicy, applications: list[Application]) -> None:
    # An application is under one policy at most: listing it here takes it from another policy.
    ApplicationSla.objects.filter(policy=policy).exclude(application__in=applications).delete()
    for application in applications:
        ApplicationSla.objects.update_or_create(application=application, defaults={"policy": policy})


def sla_policy_create(*, name: str, first_response_seconds: int, resolution_seconds: int, applications: list[Application]) -> SlaPolicy:
    """Creates a policy; the chats its applications receive from now on get its due times (chats already
    there keep theirs, or none)."""
    with transaction.atomic():
        policy = SlaPolicy.objects.create(
            name=name, first_response_seconds=first_response_seconds, resolution_seconds=resolution_seconds
        )
        _policy_applications_set(policy=policy, applications=applications)
    return policy


def sla_policy_update(*, policy: SlaPolicy, **changes) -> SlaPolicy:
    """Changes a policy; new targets apply to chats that arrive from now on."""
    with transaction.atomic():
        applications = changes.pop("applications", None)
        for field, value in changes.items():
            setattr(policy, field, value)
        if changes:
            policy.save(update_fields=[*changes, "updated_at"])
        if applications is not None:
            _policy_applications_set(policy=policy, applications=applications)
    return policy


def sla_policy_delete(*, policy: SlaPolicy) -> None:
    """Deletes a policy: its applications' new chats get no SLA; chats that have one keep it."""
    policy.delete()
