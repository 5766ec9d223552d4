"""Which events a stream's viewer receives (PRODUCT.md, "Real-time stream"): one rule for live events and for
the Last-Event-ID replay (`stream.selectors` writes the same rule in SQL; stream/tests/test_access.py checks
both against each other).

- An admin receives every event of the tenant.
- An agent receives every event of a chat assigned to it (its private notes included), and `chat.created`,
  `chat.assigned` and `chat.transferred` of any chat (to keep a queue view current), never a private event of
  a chat that is not its own; events of no chat (outbound messages) are the admins'.
"""

from core.models import User

QUEUE_EVENT_TYPES = frozenset({"chat.created", "chat.assigned", "chat.transferred"})


def stream_event_visible(*, role: str, user_id: int, type: str, chat_id: int | None, assigned_agent_id: int | None,
                         is_private: bool) -> bool:  # fmt: skip
    """Whether a viewer (role, user id) receives an event (its type, chat, the chat's assigned agent, privacy)."""
    if role == User.Role.ADMIN:
        return True
    if role != User.Role.AGENT:
        return False
    if chat_id is not None and assigned_agent_id == user_id:
        return True
    return type in QUEUE_EVENT_TYPES and not is_private
