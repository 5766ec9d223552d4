from django.db.models import Q, QuerySet

from agents.models import Agent
from conversations.models import Chat

# The queue's order: arrival time, then application and number for chats that arrived together.
QUEUE_ORDERING = ("created_at", "application_id", "number")


def agent_list() -> QuerySet[Agent]:
    """Agents with their user; `active_chats` (assigned, unresolved chats) is a column the services keep."""
    return Agent.objects.select_related("user")


def agent_get(*, agent_id: int) -> Agent | None:
    return agent_list().filter(pk=agent_id).first()


def queue_list() -> QuerySet[Chat]:
    """The waiting chats, next served first."""
    return Chat.objects.filter(status=Chat.Status.WAITING).select_related("application", "sla").order_by(*QUEUE_ORDERING)


def queue_position(*, chat: Chat) -> int:
    """1 + the number of waiting chats served before this one (one indexed count)."""
    ahead = Chat.objects.filter(status=Chat.Status.WAITING).filter(
        Q(created_at__lt=chat.created_at)
        | Q(created_at=chat.created_at, application_id__lt=chat.application_id)
        | Q(created_at=chat.created_at, application_id=chat.application_id, number__lt=chat.number)
    )
    return ahead.count() + 1
