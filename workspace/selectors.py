"""Reads of the agent workspace: labels (and the chats carrying them), canned responses."""

import re

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef, Q, QuerySet
from django.db.models.functions import Lower

from conversations.models import Chat
from core.models import User
from workspace.models import CannedResponse, ChatLabel, Label


def label_list() -> QuerySet[Label]:
    return Label.objects.all()


def label_get(*, label_id: int) -> Label | None:
    return Label.objects.filter(id=label_id).first()


def label_by_name_get(*, name: str) -> Label | None:
    """The label of this name, whatever its case (names are unique ignoring case: the index on lower(name))."""
    return Label.objects.alias(lower_name=Lower("name")).filter(lower_name=name.lower()).first()


def chat_label_names(*, chat: Chat) -> list[str]:
    return list(ChatLabel.objects.filter(chat=chat).order_by("label__name").values_list("label__name", flat=True))


def chats_label_names_annotate(*, chats: QuerySet[Chat]) -> QuerySet[Chat]:
    """`chats` with `label_names` (sorted) on each: a subquery of the same statement, evaluated for the rows a
    page returns only, so a page of chats costs one query whatever its size (no query per chat)."""
    names = ChatLabel.objects.filter(chat_id=OuterRef("pk")).order_by("label__name").values("label__name")
    return chats.annotate(label_names=ArraySubquery(names))


def chats_labelled(*, chats: QuerySet[Chat], name: str) -> QuerySet[Chat]:
    """The chats of `chats` that carry the label `name` (any case); none if no label has that name. The label's
    chats come from the (label, chat) index."""
    label = label_by_name_get(name=name)
    if label is None:
        return chats.none()
    return chats.filter(id__in=ChatLabel.objects.filter(label_id=label.id).values("chat_id"))


def canned_response_list(*, query: str | None = None) -> QuerySet[CannedResponse]:
    """Canned responses, by shortcut; with `query`, those whose shortcut or body contains it, ignoring case.
    A tenant holds tens to hundreds of them: a scan, no index."""
    responses = CannedResponse.objects.all()
    if query:
        responses = responses.filter(Q(shortcut__icontains=query) | Q(body__icontains=query))
    return responses


def canned_response_get(*, canned_response_id: int) -> CannedResponse | None:
    return CannedResponse.objects.filter(id=canned_response_id).first()


def canned_response_by_shortcut_get(*, shortcut: str) -> CannedResponse | None:
    return CannedResponse.objects.filter(shortcut=shortcut).first()


# The placeholders a canned response may hold. Any other `{{...}}` is left as written: a typo stays visible in
# the sent text rather than silently vanishing, and a body may talk about braces.
_PLACEHOLDER = re.compile(r"\{\{\s*(customer_id|agent_name)\s*\}\}")


def canned_response_render(*, canned: CannedResponse, chat: Chat, agent: User) -> str:
    """The canned response's body with `{{customer_id}}` (the chat's customer, or empty for a chat without one)
    and `{{agent_name}}` (the sending user's name, or email when the name is blank) filled in."""
    values = {"customer_id": chat.customer_id or "", "agent_name": agent.name or agent.email}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], canned.body)
