"""The Qiscus Omnichannel adapter: Qiscus' two webhooks (a room asks for an agent, a room is marked resolved)
become the core's chat creation and resolve, and each assignment of a Qiscus room is mirrored into Qiscus.

An integration in its own package (like Saleor's plugins/<name>/): it calls the core (conversations,
agents); the core never imports it, and tells it about assignments through agents.hooks. Its data lives in
the agents app's tables (`AllocationSettings.qiscus_*`, `Agent.qiscus_agent_id`), where it was before the
package existed.
"""

import logging
import time

from django.conf import settings
from django.db import connection, transaction
from django_tenants.utils import schema_context

from agents.hooks import ChatAssigned
from agents.models import Agent, AllocationSettings
from agents.services import allocation_settings_get, chat_resolve
from conversations.lock_objects import advisory_xact_lock
from conversations.models import Application, Chat
from conversations.services import chat_create
from core.exceptions import Conflict, RetryLater
from core.redis import get_redis, tenant_key

logger = logging.getLogger(__name__)


def qiscus_is_configured() -> bool:
    return bool(settings.QISCUS_BASE_URL and settings.QISCUS_APP_ID and settings.QISCUS_SECRET_KEY)


def qiscus_chats_assigned(assignments: list[ChatAssigned]) -> None:
    """The assignment engine's listener (registered in apps.py): each chat of the tenant's Qiscus application
    just assigned is assigned in Qiscus too, by a task sent once the assignment commits."""
    if not qiscus_is_configured():
        return
    qiscus_application_id = allocation_settings_get().qiscus_application_id
    pairs = [(a.chat_id, a.agent_id) for a in assignments if a.application_id == qiscus_application_id]
    if not pairs:
        return
    schema_name = connection.schema_name

    def send() -> None:
        from integrations.qiscus.tasks import qiscus_assign_agent_task

        with schema_context(schema_name):
            for chat_id, agent_id in pairs:
                qiscus_assign_agent_task.delay(chat_id, agent_id)

    transaction.on_commit(send)


def qiscus_application_get() -> Application:
    """The application holding this tenant's Qiscus rooms, created on first use."""
    with transaction.atomic():
        allocation_settings_get()
        row = AllocationSettings.objects.select_for_update().get(id=AllocationSettings.SINGLETON_ID)
        if row.qiscus_application_id is None:
            row.qiscus_application = Application.objects.create(name="Qiscus")
            row.save(update_fields=["qiscus_application"])
        return row.qiscus_application


def qiscus_agent_learn(*, qiscus_agent: dict | None) -> None:
    """Remembers which Qiscus agent id an agent has, matched by email, for the assign_agent call."""
    if not isinstance(qiscus_agent, dict):
        return
    email, agent_id = qiscus_agent.get("email"), qiscus_agent.get("id")
    if not email or agent_id in (None, ""):
        return
    if len(str(agent_id)) > Agent._meta.get_field("qiscus_agent_id").max_length:
        return  # no id Qiscus hands out (they are numbers); the allocation or resolve goes on without it
    Agent.objects.filter(user__email=str(email).strip().lower()).exclude(qiscus_agent_id=str(agent_id)).update(
        qiscus_agent_id=str(agent_id)
    )


def _qiscus_room_key(room_id: str) -> str:
    return tenant_key(connection.schema_name, "qiscus", "room", room_id)


def qiscus_customer_keys(customer_id: str) -> list[str]:
    """The Redis records this adapter keeps for a customer (contacts.hooks): its room's queued chat."""
    return [_qiscus_room_key(customer_id)]


def qiscus_room_allocate(*, room_id: str, candidate_agent: dict | None = None) -> tuple[Application, int, bool]:
    """Qiscus asks for an agent for `room_id`: the room joins the FIFO queue as a waiting chat of the Qiscus
    application (customer_id = room id), through the normal creation path.

    Qiscus repeats the request for every customer message until the room has an agent, so a room with an
    open chat (waiting or assigned, or still queued for persistence) gets that chat back instead of a new
    one. Returns (application, chat number, created).
    """
    application = qiscus_application_get()
    qiscus_agent_learn(qiscus_agent=candidate_agent)
    redis = get_redis()
    with transaction.atomic(), connection.cursor() as cursor:
        # One allocation per room at a time (the decision below reads, then creates).
        advisory_xact_lock(name=f"qiscus:{connection.schema_name}:{room_id}")
        open_chat = (
            Chat.objects.filter(application=application, customer_id=room_id)
            .filter(status__in=[Chat.Status.WAITING, Chat.Status.ASSIGNED])
            .order_by("-number")
            .first()
        )
        if open_chat is not None:
            return application, open_chat.number, False
        queued = redis.get(_qiscus_room_key(room_id))
        if queued is not None and not Chat.objects.filter(application=application, number=int(queued)).exists():
            return application, int(queued), False  # created, not yet persisted
        number = chat_create(application=application, customer_id=room_id)
        redis.set(_qiscus_room_key(room_id), number, ex=24 * 3600)
    return application, number, True


# How long a mark-as-resolved waits for its room's chat, allocated but still queued, to be persisted before
# answering 409 (the resolve then completes in a task). The drain normally persists within milliseconds.
QISCUS_RESOLVE_WAIT_SECONDS = 2.0


class QiscusChatNotPersisted(Exception):
    """The room's chat is allocated but not persisted yet: the resolve task retries."""


def qiscus_room_resolve(*, room_id: str, resolved_by: dict | None = None) -> Chat | None:
    """Qiscus marked the room resolved: resolves its open chat (or answers its latest, already resolved)
    and serves the next waiting chat. None when no chat of this room exists.

    Qiscus often resolves a room right after asking for its allocation, while the room's chat is still
    queued for persistence (its number allocated, its row not written). Left alone, that chat would be
    persisted as waiting and later take an agent's slot. So the resolve waits up to
    QISCUS_RESOLVE_WAIT_SECONDS for the row; if it is still not there, it schedules
    `qiscus_room_resolve_task` (which resolves the chat once its row exists, retrying until then) and raises
    RetryLater (409 with Retry-After): the chat ends resolved either way.
    """
    application = qiscus_application_get()
    qiscus_agent_learn(qiscus_agent=resolved_by)
    chat = Chat.objects.filter(application=application, customer_id=room_id).order_by("-number").first()
    queued = get_redis().get(_qiscus_room_key(room_id))
    if queued is not None and (chat is None or chat.number < int(queued)):
        chat = _qiscus_chat_wait(application=application, number=int(queued))
        if chat is None:
            qiscus_room_resolve_schedule(room_id=room_id, chat_number=int(queued))
            # A repeat after Retry-After then finds it resolved.
            raise RetryLater("The room's chat is still being created; it will be resolved as soon as it exists.", seconds=1)
    if chat is None:
        return None
    return _qiscus_chat_resolve(chat)


def _qiscus_chat_wait(*, application: Application, number: int) -> Chat | None:
    deadline = time.monotonic() + QISCUS_RESOLVE_WAIT_SECONDS
    while True:
        chat = Chat.objects.filter(application=application, number=number).first()
        if chat is not None or time.monotonic() >= deadline:
            return chat
        time.sleep(0.05)


def _qiscus_chat_resolve(chat: Chat) -> Chat:
    if chat.status == Chat.Status.RESOLVED:
        return chat  # Qiscus may deliver a webhook twice: nothing more to do
    try:
        return chat_resolve(chat=chat)
    except Conflict:
        return Chat.objects.get(id=chat.id)


def qiscus_room_resolve_schedule(*, room_id: str, chat_number: int) -> None:
    """Sends `qiscus_room_resolve_task` for the room's queued chat, in this tenant's context."""
    from integrations.qiscus.tasks import qiscus_room_resolve_task

    qiscus_room_resolve_task.delay(room_id, chat_number)


def qiscus_queued_chat_resolve(*, room_id: str, chat_number: int) -> Chat:
    """Resolves the room's chat `chat_number` once it is persisted (QiscusChatNotPersisted until then).
    Idempotent: an already resolved chat is returned as it is."""
    application = qiscus_application_get()
    chat = Chat.objects.filter(application=application, number=chat_number, customer_id=room_id).first()
    if chat is None:
        raise QiscusChatNotPersisted(f"chat {chat_number} of Qiscus room {room_id} is not persisted yet")
    return _qiscus_chat_resolve(chat)


class QiscusTransientError(Exception):
    """Qiscus answered 429 or 5xx: worth retrying."""


def qiscus_agent_assign(*, chat_id: int, agent_id: int) -> bool:
    """Assigns the chat's agent to its room in Qiscus (`POST /api/v1/admin/service/assign_agent`).

    Does nothing (False) if the chat has since been resolved or given to someone else (that change sends
    its own call), or if the agent's Qiscus id is unknown. Raises QiscusTransientError or a requests
    connection/timeout error for the task to retry; other refusals are logged and not retried.
    """
    import requests  # pinned in requirements.txt for outbound webhooks; the same reasons hold here

    chat = Chat.objects.filter(id=chat_id).first()
    if chat is None or chat.status != Chat.Status.ASSIGNED or chat.assigned_agent_id != agent_id:
        return False
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None or not agent.qiscus_agent_id:
        logger.warning("chat %s: agent %s has no known Qiscus id; not assigned in Qiscus", chat_id, agent_id)
        return False
    response = requests.post(
        f"{settings.QISCUS_BASE_URL.rstrip('/')}/api/v1/admin/service/assign_agent",
        data={"room_id": chat.customer_id, "agent_id": agent.qiscus_agent_id},
        headers={"Qiscus-App-Id": settings.QISCUS_APP_ID, "Qiscus-Secret-Key": settings.QISCUS_SECRET_KEY},
        timeout=settings.QISCUS_TIMEOUT_SECONDS,
        allow_redirects=False,
    )
    if response.status_code == 429 or response.status_code >= 500:
        raise QiscusTransientError(f"Qiscus answered {response.status_code}")
    if response.status_code >= 400:
        logger.error(
            "Qiscus refused assign_agent for room %s: %s %s", chat.customer_id, response.status_code, response.text[:500]
        )
        return False
    return True
