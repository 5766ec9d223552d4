"""Routing: teams, business hours and SLA (routing app)."""

from sociomile.settings.env import env_int

# --- Routing: teams, business hours and SLA (routing app) ---------------------------------------------------
# `/api/chats?sla=due_soon`: chats not breached with a due time still unmet within this many seconds from now.
SLA_DUE_SOON_SECONDS = env_int("SLA_DUE_SOON_SECONDS", 900)
