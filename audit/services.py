"""Recording staff writes in the audit log.

Each audited service calls `audit_record` once, inside its own transaction and after its checks, so a write
that is refused or rolls back leaves no entry, and a committed one exactly one. The actor is not an
argument: it is the signed-in user of the request being served (core.actors), or "system".

Why not django-pghistory or django-auditlog (both evaluated for schema-per-tenant): both record row changes
(pghistory with triggers, auditlog with model signals), not the staff actions the product lists ("assign",
"resolve", "scheduler start"). Triggers on chats and agents would also fire on the drain's and the assignment
engine's writes (system work, the hot path), and signals miss the queryset and raw-SQL updates those
services make. A domain action recorded by the service that performs it is both complete and cheap.
"""

from django.db import models

from audit.models import AuditEntry
from core.actors import actor_current

SYSTEM_ACTOR = "system"
# Values never written into an entry, whatever service passes them: only that they changed.
REDACTED_FIELDS = frozenset({"auth_key", "secret", "password", "webhook_secret"})
REDACTED = "[redacted]"


def audit_target(target) -> str:
    """How an entry names its object: the identifiers the API shows (an application's token and a chat's
    number, an agent's or a ticket's id), a string as given."""
    if isinstance(target, str):
        return target
    label = target._meta.model_name
    if label == "chat":
        return f"chat {target.application.token}/{target.number}"
    return f"{label} {target.pk}"


def _jsonable(value):
    if isinstance(value, models.Model):
        return audit_target(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(item) for item in value]
    return str(value)


def audit_record(*, action: str, target, changes: dict | None = None, skip_if_unchanged: bool = False) -> AuditEntry | None:
    """Writes one entry in the caller's transaction. `changes`: field -> new value (secrets redacted).
    `skip_if_unchanged`: write nothing when `changes` is empty (an edit that changed nothing)."""
    if skip_if_unchanged and not changes:
        return None
    user = actor_current()
    changes = {name: REDACTED if name in REDACTED_FIELDS else _jsonable(value) for name, value in (changes or {}).items()}
    return AuditEntry.objects.create(
        actor=user.email if user is not None else SYSTEM_ACTOR,
        actor_user_id=user.pk if user is not None else None,
        action=action,
        target=audit_target(target),
        changes=changes,
    )


def audit_targets_rename(*, target: str, new_target: str) -> int:
    """Renames a target in every entry that names it (an erased customer's entries lose their id)."""
    return AuditEntry.objects.filter(target=target).update(target=new_target)
