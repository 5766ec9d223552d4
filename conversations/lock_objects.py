"""The locks of the chat lifecycle, and the one order in which every transaction takes them.

A transaction takes any subset of these, always in this order:

1. the tenant's assignment lock (`assignment_lock`): the assignment engine, a manual assignment, the
   active-chats recount, a transfer, and every change to what the engine reads of routing (a team's agents
   or hours, an application's team: routing.services), so a run sees a team before or after an edit;
2. chat rows (`chat_lock`, `chats_lock`, or the engine's requeue statements, which update assigned chats);
   then the rows that hang off a chat (routing's ChatTeam and ChatSla), only ever written holding their
   chat's row or in the drain's batch, which holds its chats (routing.sla);
3. the tenant's admins' user rows (core.services.user_last_admin_check), when a role or an account changes;
4. agent rows (`agent_lock`, or any UPDATE of `agents_agent.active_chats`);
5. the tenant's due-work marks (tenants.work.tenant_work_mark), last of all.

Why chats before agents: a resolve holds its chat and then gives its agent the slot back. A path that locked
an agent and then one of that agent's assigned chats would deadlock with it. Why the marks last: a drain
batch marks the tenant's assignment work; had it marked before waiting for a chat row held by a resolve
that marks next, each would wait for the other (tenants/tests/test_work.py proves this order deadlock-free).

The one place agents come before chats: the engine locks the eligible agents, then the head of the queue
(it must know the capacity before it reads how many chats). That is safe because it holds the assignment
lock (no manual assignment runs meanwhile) and those chats are waiting ones: no path locks a waiting chat
and then an agent (resolving a waiting chat frees no agent's slot), nor locks a waiting chat and then waits
for another chat, which a resolve may hold while it waits for an agent: a drain batch locks the chats of its
messages with the waiting ones last (conversations.services._LOCK_MESSAGE_CHATS;
tenants/tests/test_work.py has the three-way case).

Like Saleor's checkout/lock_objects.py: the services call these functions instead of repeating
`select_for_update()` with a comment on the order at each place.
"""

from django.db import connection

from agents.models import Agent
from conversations.models import Chat
from core.prepared import prepared_cursor

# Arbitrary first key of our advisory locks ("SM"); the second is a hash of the lock's name, which includes
# the tenant's schema.
_ADVISORY_LOCK_CLASS = 0x534D


def advisory_xact_lock(*, name: str, shared: bool = False) -> None:
    """Takes the transaction-level advisory lock `name`: released by COMMIT, ROLLBACK or a dead connection,
    so a killed worker never leaves it held. Advisory locks are database-wide: include the schema in `name`
    (a hash collision would only serialise two holders, never break a rule). `shared`: holders of the shared
    lock do not wait for one another, only for (and block) a holder of the exclusive one."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with prepared_cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, hashtext(%s))", [_ADVISORY_LOCK_CLASS, name])


def assignment_lock() -> None:
    """The tenant's assignment lock (first in the order). Held until the transaction ends.

    Why one lock per tenant rather than row locks or SKIP LOCKED: an assignment is a decision over the whole
    queue and the whole pool of agents at once. With SKIP LOCKED, a second worker would skip the head chat
    its neighbour holds and assign the next one (FIFO broken if the neighbour then fails), and two workers
    could both count an agent at 1 of 2 and both give it a chat (limit broken). Serialising runs per tenant
    makes every rule hold by construction, and costs little because one run assigns a whole batch per
    statement. Tenants never wait for one another: the name includes the schema.
    """
    advisory_xact_lock(name=f"assignment:{connection.schema_name}")


def chat_lock(*, chat_id: int) -> Chat:
    """The chat's row, locked FOR UPDATE until the transaction ends (second in the order)."""
    return Chat.objects.select_for_update().get(id=chat_id)


def agent_lock(*, agent_id: int) -> Agent:
    """The agent's row (with its user), locked FOR NO KEY UPDATE until the transaction ends (fourth in the
    order). NO KEY: rows that only reference the agent (its assignments) can still be written meanwhile."""
    return Agent.objects.select_for_update(no_key=True).select_related("user").get(pk=agent_id)


# Waiting chats last, as the drain locks a batch's chats (conversations.services._LOCK_MESSAGE_CHATS).
_CHATS_LOCK = """
SELECT id FROM conversations_chat WHERE id = ANY(%s) ORDER BY status = 'waiting', id FOR NO KEY UPDATE
"""


def chats_lock(*, chat_ids: list[int]) -> None:
    """Several chats' rows (second in the order), locked FOR NO KEY UPDATE until the transaction ends: assigned
    and resolved ones first, waiting ones last (see the docstring on the engine's exception)."""
    with connection.cursor() as cursor:
        cursor.execute(_CHATS_LOCK, [chat_ids])
