# The conversations tests' fixtures (an application, the client API, an agent, the in-process drain), shared
# rather than copied: the workspace's features ride on chats and messages.
from conversations.tests.conftest import agent_a, agent_a_api, application_a, client_a, drain  # noqa: F401
