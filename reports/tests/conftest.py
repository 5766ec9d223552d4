from datetime import UTC, datetime

import pytest
from django.utils import timezone

from conversations import services as conversation_services


class Clock:
    """A frozen clock the test moves by hand: every `timezone.now()` of the code under test reads it."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def clock(monkeypatch):
    frozen = Clock(datetime(2026, 3, 6, tzinfo=UTC))
    monkeypatch.setattr(timezone, "now", frozen.now)
    return frozen


@pytest.fixture
def no_drain_task(monkeypatch):
    """Tests run inside a rolled-back transaction: they drain in this process (creations_persist) instead
    of sending the task."""
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)
