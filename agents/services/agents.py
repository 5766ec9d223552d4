"""Agents: the tenant's allocation settings, agent rows for staff users, who may change an agent, and creating
and editing agents. A change that gives the pool room (online, more capacity) schedules an assignment run."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction

from agents.models import Agent, AllocationSettings
from agents.services.schedule import assignment_schedule
from audit.services import audit_record
from conversations.lock_objects import agent_lock
from core.models import User
from core.services import user_create, user_last_admin_check

STAFF_ROLES = (User.Role.ADMIN, User.Role.AGENT)


def allocation_settings_get() -> AllocationSettings:
    """The tenant's allocation settings row, created on first use."""
    row, _ = AllocationSettings.objects.get_or_create(id=AllocationSettings.SINGLETON_ID)
    return row


def agent_for_user(*, user: User) -> Agent:
    """The user's Agent row, created (offline, tenant default capacity) if the user never had one."""
    agent = Agent.objects.filter(user=user).first()
    if agent is None:
        agents_ensure()
        agent = Agent.objects.get(user=user)
    return agent


def agents_ensure() -> int:
    """Gives every admin and agent of this tenant an Agent row (offline, default capacity) if it has none.

    Users made by the agents API get theirs at once; this covers the others (the tenant's first admin,
    users added in the Django admin). Idempotent and cheap; returns the rows added.
    """
    default = allocation_settings_get().default_max_customers
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO agents_agent (user_id, is_online, max_customers, qiscus_agent_id)
            SELECT id, false, %s, '' FROM core_user WHERE role = ANY(%s)
            ON CONFLICT (user_id) DO NOTHING
            """,
            [default, list(STAFF_ROLES)],
        )
        return cursor.rowcount


def agent_access_check(*, agent: Agent, user: User, fields: set[str]) -> None:
    """Who may change an agent: an admin any field, an agent only its own `is_online` (PermissionDenied).
    Used by the agents API and by the tenant admin's agent pages and actions."""
    if user.is_tenant_admin:
        return
    if agent.pk != user.id or set(fields) - {"is_online"}:
        raise PermissionDenied("Agents may only set their own is_online.")


def agent_create(
    *,
    email: str,
    password: str,
    name: str = "",
    role: str = User.Role.AGENT,
    max_customers: int | None = None,
    is_online: bool = False,
) -> Agent:
    """Creates a tenant user and its Agent in one transaction (a refused email or password writes nothing)."""
    if role not in STAFF_ROLES:
        raise ValidationError({"role": [f"Must be one of: {', '.join(STAFF_ROLES)}."]})
    with transaction.atomic():
        user = user_create(email=email, password=password, role=role, name=name)
        agent = Agent.objects.create(
            user=user,
            is_online=is_online,
            max_customers=allocation_settings_get().default_max_customers if max_customers is None else max_customers,
        )
        if is_online:
            assignment_schedule()
        audit_record(action="agent.created", target=agent, changes={"email": user.email, "role": role, "max_customers": agent.max_customers, "is_online": is_online})
    return agent


def agent_update(
    *,
    agent: Agent,
    name: str | None = None,
    role: str | None = None,
    max_customers: int | None = None,
    is_online: bool | None = None,
) -> Agent:
    """Edits an agent; going online or gaining capacity schedules an assignment run. Demoting the tenant's
    last active admin is refused (Conflict, 409)."""
    if role is not None and role not in STAFF_ROLES:
        raise ValidationError({"role": [f"Must be one of: {', '.join(STAFF_ROLES)}."]})
    with transaction.atomic():
        if role is not None:
            # Before the agent's row: the lock order (conversations.lock_objects).
            user_last_admin_check(user_id=agent.pk, remains_admin=role == User.Role.ADMIN)
        # Locked: a concurrent edit or assignment run sees this change whole or not at all.
        agent = agent_lock(agent_id=agent.pk)
        will_be_online = agent.is_online if is_online is None else is_online
        more_room = will_be_online and (
            not agent.is_online or (max_customers is not None and max_customers > agent.max_customers)
        )
        agent_fields = []
        if is_online is not None and is_online != agent.is_online:
            agent.is_online = is_online
            agent_fields.append("is_online")
        if max_customers is not None and max_customers != agent.max_customers:
            agent.max_customers = max_customers
            agent_fields.append("max_customers")
        if agent_fields:
            agent.save(update_fields=agent_fields)
        user_fields = []
        if name is not None and name != agent.user.name:
            agent.user.name = name
            user_fields.append("name")
        if role is not None and role != agent.user.role:
            agent.user.role = role
            # Admins use the tenant's Django admin; agents the API only (as core.services.user_create does).
            agent.user.is_staff = agent.user.is_superuser = role == User.Role.ADMIN
            user_fields += ["role", "is_staff", "is_superuser"]
        if user_fields:
            agent.user.save(update_fields=user_fields)
        if more_room:
            assignment_schedule()
        audit_record(action="agent.updated", target=agent, changes={name: getattr(agent.user if name in user_fields else agent, name) for name in agent_fields + user_fields}, skip_if_unchanged=True)
    return agent


def agent_set_online(*, agent: Agent, is_online: bool) -> Agent:
    """Puts an agent on- or offline. Going offline keeps its current chats; it just gets no new ones."""
    return agent_update(agent=agent, is_online=is_online)
