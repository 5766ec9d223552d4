"""Writes of the agent workspace: labels and their chats, canned responses.

Uniqueness (a label's name ignoring case, a canned response's shortcut, a label once per chat) is decided by
the database's unique indexes, never by a read before the write: two requests at once cannot both win.
"""

from django.db import IntegrityError, transaction

from conversations.access import chat_access_check
from conversations.models import Chat
from core.exceptions import Conflict
from core.models import User
from workspace.models import CannedResponse, ChatLabel, Label


def _is_unique_violation(error: IntegrityError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) == "23505"


def label_create(*, name: str, color: str | None = None) -> Label:
    """A new label; Conflict (409) if one has this name already, whatever its case."""
    label = Label(name=name)
    if color is not None:
        label.color = color
    try:
        with transaction.atomic():
            label.save()
    except IntegrityError as error:
        if not _is_unique_violation(error):
            raise
        raise Conflict("A label with this name exists already.") from error
    return label


def chat_label_add(*, chat: Chat, label: Label, user: User) -> None:
    """Puts the label on the chat; nothing changes if it is there already (idempotent, race-free: the pair's
    unique index, ON CONFLICT DO NOTHING). The chat's assigned agent or an admin only, as for a reply."""
    chat_access_check(chat=chat, user=user, action="label it")
    ChatLabel.objects.bulk_create([ChatLabel(chat=chat, label=label)], ignore_conflicts=True)


def chat_label_remove(*, chat: Chat, label: Label, user: User) -> None:
    """Takes the label off the chat; nothing changes if it was not there (idempotent). Same access as adding."""
    chat_access_check(chat=chat, user=user, action="label it")
    ChatLabel.objects.filter(chat=chat, label=label).delete()


def canned_response_create(*, shortcut: str, body: str) -> CannedResponse:
    """A new canned response; Conflict (409) if the shortcut is taken."""
    canned = CannedResponse(shortcut=shortcut, body=body)
    _canned_response_save(canned)
    return canned


def canned_response_update(*, canned: CannedResponse, shortcut: str | None = None, body: str | None = None) -> CannedResponse:
    """Changes the shortcut and/or body; Conflict (409) if the new shortcut is taken."""
    if shortcut is not None:
        canned.shortcut = shortcut
    if body is not None:
        canned.body = body
    _canned_response_save(canned, update_fields=["shortcut", "body", "updated_at"])
    return canned


def canned_response_delete(*, canned: CannedResponse) -> None:
    canned.delete()


def _canned_response_save(canned: CannedResponse, update_fields: list[str] | None = None) -> None:
    try:
        with transaction.atomic():
            canned.save(update_fields=update_fields)
    except IntegrityError as error:
        if not _is_unique_violation(error):
            raise
        raise Conflict("A canned response with this shortcut exists already.") from error
