from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from agents.models import Agent
from conversations.models import Chat

# The queue's order: arrival time, then application and number for chats that arrived together.
QUEUE_ORDERING = ("created_at", "application_id", "number")


def agent_list() -> QuerySet[Agent]:
    """Agents with their user and `active_chats` (assigned, unresolved chats) annotated: one query a page.

    A correlated count on the (assigned_agent, status) index, not a join: a join would drag every chat the
    agent ever resolved into the aggregate.
    """
    active = (
        Chat.objects.filter(assigned_agent_id=OuterRef("pk"), status=Chat.Status.ASSIGNED)
        .order_by()
        .values("assigned_agent_id")
        .annotate(total=Count("id"))
        .values("total")
    )
    return Agent.objects.select_related("user").annotate(
        active_chats=Coalesce(Subquery(active, output_field=IntegerField()), Value(0))
    )


def agent_get(*, agent_id: int) -> Agent | None:
    return agent_list().filter(pk=agent_id).first()


def queue_list() -> QuerySet[Chat]:
    """The waiting chats, next served first."""
    return Chat.objects.filter(status=Chat.Status.WAITING).select_related("application").order_by(*QUEUE_ORDERING)


def queue_position(*, chat: Chat) -> int:
    """1 + the number of waiting chats served before this one (one indexed count)."""
    ahead = Chat.objects.filter(status=Chat.Status.WAITING).filter(
        Q(created_at__lt=chat.created_at)
        | Q(created_at=chat.created_at, application_id__lt=chat.application_id)
        | Q(created_at=chat.created_at, application_id=chat.application_id, number__lt=chat.number)
    )
    return ahead.count() + 1
