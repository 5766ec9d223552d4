"""Who may act on a chat, a message or a ticket: one check per resource (as Zulip's `access_*_by_id`), called
by every API view and admin action that writes, and again by a service under the row's lock where a race
matters (the chat's assignee can change between the view's check and the write).

Each raises Django's PermissionDenied (403 through core.exceptions.exception_handler). `user` None stands
for the client (the application token, no staff token) where that is a side of its own, or for the system
(Qiscus, the sweep) in chat_access_check.
"""

from django.core.exceptions import PermissionDenied

from conversations.models import Chat, Message, Ticket
from core.models import User


def chat_access_check(*, chat: Chat | None, user: User | None, action: str) -> None:
    """The chat's assigned agent or an admin may reply to, resolve, escalate or transfer it; `action` names
    the act in the refusal ("resolve it"). A chat not persisted yet (None) has no assignee: admins only.
    `user` None is the system, which may."""
    if user is None or user.is_tenant_admin:
        return
    if chat is None or chat.assigned_agent_id != user.id:
        raise PermissionDenied(f"Only the chat's assigned agent or an admin may {action}.")


def message_access_check(*, message: Message, user: User | None) -> None:
    """A message is edited only by its author's side: a customer's message by the client (the application
    token, `user` None), an agent's by its author or an admin. System messages by nobody."""
    if message.sender == Message.Sender.CUSTOMER:
        if user is None:
            return
        raise PermissionDenied("A customer's message is edited only by the client (the application token, no staff token).")
    if message.sender == Message.Sender.AGENT and user is not None and (user.is_tenant_admin or message.author_id == user.id):
        return
    raise PermissionDenied("Only the message's author or an admin may edit it.")


def ticket_access_check(*, ticket: Ticket, user: User) -> None:
    """Only admins change a ticket (PRODUCT: agents escalate, admins change its status)."""
    if not user.is_tenant_admin:
        raise PermissionDenied("Only this tenant's admins may change a ticket.")
