"""Contacts: one row per customer of the tenant, made and kept current by the drain (contacts.services)."""

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models

from conversations.lookups import TrigramIContains


class Contact(models.Model):
    """A customer as the tenant knows them, keyed by the `customer_id` their chats carry.

    Created on first contact, in the drain's transaction that persists their first chat (whichever way it
    came: client API, channel webhook, Qiscus); `chats_count`, `first_seen_at` and `last_seen_at` are kept
    there too. Staff edit `name`, `email`, `phone` and `attributes`. `__str__` never shows the customer id:
    the admin's log keeps object names, and an erasure must leave no id behind.
    """

    customer_id = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=255, blank=True, default="")
    email = models.CharField(max_length=254, blank=True, default="")
    phone = models.CharField(max_length=32, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    chats_count = models.PositiveIntegerField(default=0)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        indexes = [
            # `?q=`: ILIKE '%q%' on each searchable field, each served by a pg_trgm GIN index (the planner ORs
            # the four bitmaps). Schema-qualified opclass: tenant migrations run with public off the search path.
            GinIndex(OpClass("customer_id", name="public.gin_trgm_ops"), name="contact_customer_id_trgm_idx"),
            GinIndex(OpClass("name", name="public.gin_trgm_ops"), name="contact_name_trgm_idx"),
            GinIndex(OpClass("email", name="public.gin_trgm_ops"), name="contact_email_trgm_idx"),
            GinIndex(OpClass("phone", name="public.gin_trgm_ops"), name="contact_phone_trgm_idx"),
            models.Index(fields=["last_seen_at", "id"], name="contact_last_seen_idx"),
        ]

    def __str__(self) -> str:
        return f"contact {self.pk}"


for _field in ("customer_id", "name", "email", "phone"):
    Contact._meta.get_field(_field).register_lookup(TrigramIContains)
