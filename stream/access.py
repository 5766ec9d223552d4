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


def stream_event_audience(*, type: str, chat_id: int | None, assigned_agent_id: int | None,
                          is_private: bool) -> tuple[bool, int | None]:  # fmt: skip
    """Which agents receive an event, admins aside (they receive all): (every agent, the one agent's user id or
    None). The fan-out looks connections up by these two instead of testing each connection."""
    return type in QUEUE_EVENT_TYPES and not is_private, assigned_agent_id if chat_id is not None else None


def stream_event_visible(*, role: str, user_id: int, type: str, chat_id: int | None, assigned_agent_id: int | None,
                         is_private: bool) -> bool:  # fmt: skip
    """Whether a viewer (role, user id) receives an event (its type, chat, the chat's assigned agent, privacy)."""
    if role == User.Role.ADMIN:
        return True
    if role != User.Role.AGENT:
        return False
    every_agent, agent_id = stream_event_audience(type=type, chat_id=chat_id, assigned_agent_id=assigned_agent_id,
                                                  is_private=is_private)  # fmt: skip
    return every_agent or (agent_id is not None and agent_id == user_id)
