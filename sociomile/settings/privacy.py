"""Privacy: contacts and their erasure (contacts app)."""

from sociomile.settings.env import env_int

# --- Privacy: contacts, export, erasure (contacts app) ------------------------------------------------
# An erasure holds the tenant's drain lock while it rewrites the queued creations; it waits this long for a
# running drain batch to finish, then answers 409 with Retry-After.
CONTACTS_ERASURE_LOCK_WAIT_SECONDS = env_int("CONTACTS_ERASURE_LOCK_WAIT_SECONDS", 10)
# How long the drain drops customer messages that reach an erased customer's chats (a delivery that found the
# chat before the erasure and queued after it). At least the longest a creation waits in the queue.
CONTACTS_ERASED_CHATS_TTL_SECONDS = env_int("CONTACTS_ERASED_CHATS_TTL_SECONDS", 7 * 24 * 3600)
