"""What the assignment engine announces, for integrations that mirror it elsewhere (Qiscus today).

The core never imports an integration: an integration registers a listener here from its AppConfig.ready()
(integrations/qiscus/apps.py), like Saleor's plugins/<name>/. The event outbox, once it exists, is the
durable way to hear the same news; this is the in-process one.
"""

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple


class ChatAssigned(NamedTuple):
    chat_id: int
    agent_id: int
    application_id: int
    created_at: datetime | None = None  # the chat's arrival and its assignment: how long it waited, without a query
    assigned_at: datetime | None = None


ChatsAssignedListener = Callable[[list[ChatAssigned]], None]

_chats_assigned_listeners: list[ChatsAssignedListener] = []


def chats_assigned_listen(listener: ChatsAssignedListener) -> None:
    """Registers `listener` (once, however often this is called: ready() may run twice in tests)."""
    if listener not in _chats_assigned_listeners:
        _chats_assigned_listeners.append(listener)


def chats_assigned_announce(assignments: list[ChatAssigned]) -> None:
    """Tells every listener about chats just assigned (by the queue or by hand). Called inside the assigning
    transaction, before it commits: a listener defers what it sends with `transaction.on_commit`, so a
    rolled-back assignment announces nothing outside."""
    if not assignments:
        return
    for listener in _chats_assigned_listeners:
        listener(assignments)
