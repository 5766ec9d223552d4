"""The agents app's fixtures (agents, chats through the drain, counted runs), shared with routing's tests, whose
flows are assignment flows."""

import pytest

from agents.tests.conftest import application_a, chats, make_agent  # noqa: F401
from agents.tests.conftest import runs as agents_runs  # noqa: F401
from routing import services as routing_services


@pytest.fixture
def runs(agents_runs, monkeypatch):
    """As agents' `runs`, counting the runs routing's services schedule too."""

    def schedule():
        agents_runs.scheduled += 1

    monkeypatch.setattr(routing_services, "assignment_schedule", schedule)
    return agents_runs
