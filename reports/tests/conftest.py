from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from conversations import services as conversation_services
from reports.tests.timeline import play, utc


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


@pytest.fixture
def timeline(tenant_a, tenant_b, clock, no_drain_task, settings):
    # Assigned chats with no reply in 30 minutes go back to the queue (and are served again): their waiting
    # time is still to their first assignment.
    settings.ASSIGNMENT_REPLY_TIMEOUT_SECONDS = 1800
    played = play(tenant=tenant_a, clock=clock, seed=23, chats=60, start=utc(2026, 3, 6, 12), span=timedelta(days=3), email_prefix="a")
    # Another tenant, busy at the same hours: none of it may show in tenant A's figures.
    play(tenant=tenant_b, clock=clock, seed=24, chats=25, start=utc(2026, 3, 6, 12), span=timedelta(days=3), email_prefix="b")
    clock.at = utc(2026, 3, 12, 12)
    return played
