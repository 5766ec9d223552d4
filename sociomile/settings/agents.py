"""The agents app: allocation defaults, the assignment engine, the Qiscus integration."""

from sociomile.settings.env import env_int, env_str

# What a new agent's max_customers is unless its creator says otherwise (each tenant can change its own
# default in its admin: agents.AllocationSettings).
AGENT_DEFAULT_MAX_CUSTOMERS = env_int("AGENT_DEFAULT_MAX_CUSTOMERS", 2)
# Chats assigned per round of the engine's loop (one transaction holds all rounds of a run).
ASSIGNMENT_BATCH_SIZE = env_int("ASSIGNMENT_BATCH_SIZE", 500)
# An assigned chat whose agent has not replied within this many seconds goes back to the head of the
# queue for another agent; 0 turns it off. Checked by every run and by the sweep (ASSIGNMENT_SWEEP_SECONDS).
ASSIGNMENT_REPLY_TIMEOUT_SECONDS = env_int("ASSIGNMENT_REPLY_TIMEOUT_SECONDS", 0)
# Assignment runs on every event that can change it (agents.services). A tenant left with waiting chats and
# no free agent is looked at again this often (the safety net: agents.services.assignment_next_due_at).
ASSIGNMENT_SWEEP_SECONDS = env_int("ASSIGNMENT_SWEEP_SECONDS", 30)
# Qiscus Omnichannel: when all three are set, each assignment of a Qiscus room is also made in Qiscus.
QISCUS_BASE_URL = env_str("QISCUS_BASE_URL", "")
QISCUS_APP_ID = env_str("QISCUS_APP_ID", "")
QISCUS_SECRET_KEY = env_str("QISCUS_SECRET_KEY", "")
QISCUS_TIMEOUT_SECONDS = env_int("QISCUS_TIMEOUT_SECONDS", 10)
QISCUS_MAX_RETRIES = env_int("QISCUS_MAX_RETRIES", 5)
