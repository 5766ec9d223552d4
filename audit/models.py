"""The tenant's audit log: one row per staff write, written in the write's own transaction (audit.services)."""

from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    """Who did what to what. Append-only: nothing in the product updates or deletes an entry, except the
    erasure of a customer, which rewrites the targets that named them (contacts.services.contact_erase).

    `actor` is the user's email as it was then (the user may be deleted or renamed later), "system" for work
    without a signed-in user; `target` names the object as the API does (an application token and a chat
    number, an agent id, a ticket id...), never a database id the API hides.
    """

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(default=timezone.now, editable=False)
    actor = models.CharField(max_length=255)
    actor_user_id = models.BigIntegerField(null=True, blank=True, help_text="The user's id, if one acted.")
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=400)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["at", "id"], name="audit_at_idx"),
            models.Index(fields=["actor", "at"], name="audit_actor_at_idx"),
            models.Index(fields=["action", "at"], name="audit_action_at_idx"),
            models.Index(fields=["target"], name="audit_target_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"
