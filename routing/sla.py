"""Arrivals (away messages, SLA due times) and SLA breaches (PRODUCT.md, "Teams, business hours and SLA").

The drain calls `routing_creations_persisted` inside each batch's transaction, with the ids of the chats and
messages it has just inserted (a batch re-run after a crash inserts nothing twice, so nothing here runs twice
for a row):

- a new chat whose team is closed at its arrival gets the team's away message (one per chat: its ChatAway
  row, inserted ON CONFLICT DO NOTHING, decides), queued as a `system` message once the batch commits;
- a new chat of an application under an SLA policy gets its due times, in its team's business time, and the
  tenant's `sla` work is marked due at the earliest (tenants.work): breaches are found by due time, never by
  a scan of every chat or a periodic task per tenant;
- a first agent message that is not a private note meets the first response.

`sla_breaches_record` (task `sla_breaches_check_task`, sent by the dispatcher when the mark is due) marks the
chats past a due time unmet, each once: a conditional UPDATE (`NOT breached`) decides between two concurrent
runs, and the `chat.sla_breached` event is written in the same transaction, for the rows that UPDATE returned.
"""

import json
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django_tenants.utils import schema_context

from conversations.lock_objects import chats_lock
from conversations.models import Application, Chat, Message
from core.prepared import prepared_cursor
from events.services import CHAT_SLA_BREACHED, events_record_chats
from reports.services import report_sla_breached
from routing.hours import business_time_add, hours_is_open
from routing.models import ChatSla
from tenants.models import TenantWork
from tenants.work import tenant_work_mark, tenant_work_settle, tenant_work_version

# New chats routed to a team or under a policy, with what their arrival needs.
_ARRIVED = """
SELECT chat.id, chat.application_id, chat.number, chat.created_at, team.business_hours, team.away_message,
       policy.id, policy.first_response_seconds, policy.resolution_seconds, team.id
FROM conversations_chat AS chat
LEFT JOIN routing_chatteam AS chat_team ON chat_team.chat_id = chat.id
LEFT JOIN routing_applicationteam AS app_team ON app_team.application_id = chat.application_id
LEFT JOIN routing_team AS team ON team.id = COALESCE(chat_team.team_id, app_team.team_id)
LEFT JOIN routing_applicationsla AS link ON link.application_id = chat.application_id
LEFT JOIN routing_slapolicy AS policy ON policy.id = link.policy_id
WHERE chat.id = ANY(%s) AND (team.id IS NOT NULL OR policy.id IS NOT NULL)
"""

_AWAY_CLAIM = """
INSERT INTO routing_chataway (chat_id, sent_at) SELECT unnest(%s::bigint[]), %s
ON CONFLICT (chat_id) DO NOTHING RETURNING chat_id
"""

_SLA_INSERT = """
INSERT INTO routing_chatsla (chat_id, policy_id, first_response_due_at, resolution_due_at, breached)
SELECT d.chat, d.policy, d.first_due, d.resolution_due, false
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS d(chat, policy, first_due, resolution_due)
ON CONFLICT (chat_id) DO NOTHING
"""

# The first agent message of each chat among the new ones that is not a private note.
_FIRST_RESPONSES = """
UPDATE routing_chatsla AS sla SET first_response_at = m.created_at
FROM (
    SELECT DISTINCT ON (chat_id) chat_id, created_at FROM conversations_message
    WHERE id = ANY(%s) AND sender = 'agent' AND NOT is_private ORDER BY chat_id, number
) AS m
WHERE sla.chat_id = m.chat_id AND sla.first_response_at IS NULL
"""


def routing_creations_persisted(*, chat_ids: list[int], message_ids: list[int]) -> None:
    """The drain's hook (conversations.services._persist_batch), in the batch's transaction: away messages and
    SLA due times for the new chats, first responses from the new messages. See the module's docstring."""
    if message_ids:
        with prepared_cursor() as cursor:
            cursor.execute(_FIRST_RESPONSES, [message_ids])
    if not chat_ids:
        return
    with prepared_cursor() as cursor:
        cursor.execute(_ARRIVED, [chat_ids])
        arrived = cursor.fetchall()
    if not arrived:
        return
    away: dict[int, tuple[int, int, str]] = {}
    sla_rows: list[tuple[int, int, datetime | None, datetime | None]] = []
    for chat_id, application_id, number, created_at, hours, away_message, policy_id, first_seconds, resolution_seconds, team_id in arrived:
        hours = json.loads(hours) if isinstance(hours, str) else hours  # Django reads jsonb as text
        if team_id is not None and away_message and not hours_is_open(hours, created_at):
            away[chat_id] = (application_id, number, away_message)
        if policy_id is not None:
            sla_rows.append(
                (chat_id, policy_id, business_time_add(hours, created_at, first_seconds), business_time_add(hours, created_at, resolution_seconds))
            )
    with prepared_cursor() as cursor:
        if sla_rows:
            cursor.execute(_SLA_INSERT, [list(column) for column in zip(*sla_rows)])
        if away:
            cursor.execute(_AWAY_CLAIM, [list(away), timezone.now()])
            claimed = [away[row[0]] for row in cursor.fetchall()]
            if claimed:
                schema_name = connection.schema_name
                transaction.on_commit(lambda: _away_messages_queue(schema_name, claimed))
    due_times = [due for row in sla_rows for due in row[2:] if due is not None]
    if due_times:
        tenant_work_mark(kind=TenantWork.Kind.SLA, due_at=min(due_times))  # last: the lock order


def _away_messages_queue(schema_name: str, chats: list[tuple[int, int, str]]) -> None:
    # Imported here: conversations.services calls this module. Queued after the batch commits, so a batch
    # rolled back and re-run queues each away message once (its ChatAway row rolled back with it); if Redis
    # fails right here, that chat has no away message (at most one, never two).
    from conversations.services import message_create

    with schema_context(schema_name):
        for application_id, number, body in chats:
            message_create(application=Application(id=application_id), chat_number=number, body=body, sender=Message.Sender.SYSTEM)


# Chats past a due time they did not meet. A first response counts as met by the resolve too (a chat resolved
# before anyone wrote did not miss its first response).
_BREACHED = """
SELECT sla.chat_id FROM routing_chatsla AS sla JOIN conversations_chat AS chat ON chat.id = sla.chat_id
WHERE NOT sla.breached AND (
    (sla.first_response_due_at <= %(now)s
     AND COALESCE(sla.first_response_at, chat.resolved_at, 'infinity') > sla.first_response_due_at)
    OR (sla.resolution_due_at <= %(now)s AND COALESCE(chat.resolved_at, 'infinity') > sla.resolution_due_at)
)
LIMIT %(limit)s
"""

_BREACH = """
UPDATE routing_chatsla SET breached = true, breached_at = %s WHERE chat_id = ANY(%s) AND NOT breached RETURNING chat_id
"""

# The next moment a chat can breach: the earliest due time ahead that is still unmet.
_NEXT_DUE = """
SELECT min(due) FROM (
    SELECT min(sla.first_response_due_at) AS due
    FROM routing_chatsla AS sla JOIN conversations_chat AS chat ON chat.id = sla.chat_id
    WHERE NOT sla.breached AND sla.first_response_due_at > %(now)s AND sla.first_response_at IS NULL
      AND chat.status <> 'resolved'
    UNION ALL
    SELECT min(sla.resolution_due_at)
    FROM routing_chatsla AS sla JOIN conversations_chat AS chat ON chat.id = sla.chat_id
    WHERE NOT sla.breached AND sla.resolution_due_at > %(now)s AND chat.status <> 'resolved'
) AS next
"""

_BREACH_BATCH = 1000


def sla_breaches_record(*, now: datetime | None = None) -> list[int]:
    """Marks every chat past an unmet due time as breached and records its `chat.sla_breached`, each exactly
    once whatever runs at the same time; returns the chats this call breached."""
    now = now or timezone.now()
    breached: list[int] = []
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_BREACHED, {"now": now, "limit": _BREACH_BATCH})
            candidates = [row[0] for row in cursor.fetchall()]
            if not candidates:
                break
            # The chats first, in the lock order (conversations.lock_objects): the event of a chat is written
            # holding its row, so a chat's events keep their order.
            chats_lock(chat_ids=candidates)
            cursor.execute(_BREACH, [now, candidates])
            newly = [row[0] for row in cursor.fetchall()]
            events_record_chats(type=CHAT_SLA_BREACHED, chat_ids=newly)
            for chat_id in newly:
                report_sla_breached(chat_id=chat_id, at=now)  # the summary's `sla_breaches`
        breached += newly
        if len(candidates) < _BREACH_BATCH:
            break
    return breached


def sla_next_due_at(*, now: datetime) -> datetime | None:
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_DUE, {"now": now})
        return cursor.fetchone()[0]


def sla_breaches_check() -> list[int]:
    """The tenant's `sla` work as the dispatcher sends it: breaches recorded, the mark moved to the next due
    time (or removed)."""
    version = tenant_work_version(kind=TenantWork.Kind.SLA)
    breached = sla_breaches_record()
    tenant_work_settle(kind=TenantWork.Kind.SLA, version=version, next_due_at=sla_next_due_at(now=timezone.now()))
    return breached


# --- reads: the `sla` of a chat item and the `?sla=` filter -------------------------------------------------


def chats_sla_filter(chats: QuerySet[Chat], *, sla: str, now: datetime | None = None) -> QuerySet[Chat]:
    """`breached`: chats whose SLA breached. `due_soon`: not breached, with a due time still unmet within
    SLA_DUE_SOON_SECONDS from now (the first response while nobody answered, or the resolution while open)."""
    if sla == "breached":
        return chats.filter(sla__breached=True)
    now = now or timezone.now()
    soon = now + timedelta(seconds=settings.SLA_DUE_SOON_SECONDS)
    first_pending = Q(sla__first_response_at__isnull=True, sla__first_response_due_at__lte=soon)
    resolution_pending = Q(sla__resolution_due_at__lte=soon)
    return chats.filter(sla__breached=False).exclude(status=Chat.Status.RESOLVED).filter(first_pending | resolution_pending)


def chat_sla_data(chat: Chat) -> dict | None:
    """The chat item's `sla` (None: the chat arrived under no policy)."""
    try:
        sla = chat.sla
    except ChatSla.DoesNotExist:
        return None
    return {"first_response_due_at": sla.first_response_due_at, "resolution_due_at": sla.resolution_due_at, "breached": sla.breached}
