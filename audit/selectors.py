from datetime import datetime

from django.db.models import QuerySet

from audit.models import AuditEntry


def audit_entry_list(*, actor: str | None = None, action: str | None = None, since: datetime | None = None) -> QuerySet:
    """The log, filtered: `actor` an email (or "system"), `action` exact, `since` inclusive."""
    entries = AuditEntry.objects.all()
    if actor is not None:
        entries = entries.filter(actor=actor.lower() if actor != "system" else actor)
    if action is not None:
        entries = entries.filter(action=action)
    if since is not None:
        entries = entries.filter(at__gte=since)
    return entries
