# The agents tests' fixtures for a tenant's agents and chats, shared with the adapter's tests.
from agents.tests.conftest import application_a, chats, make_agent  # noqa: F401
