"""A real `celery beat` process (the delivery provider's stand-in, `webhook_receiver`, is in the root conftest)."""

import sys
import uuid

import pytest

from core.tests.fixtures.workers import ChildProcess

from core.tests.support import TEST_OUTPUT, wait_for


class BeatProcess(ChildProcess):
    """A real `celery beat` subprocess with django-celery-beat's DatabaseScheduler on the test database."""

    def __init__(self, *, max_interval: int = 1):
        TEST_OUTPUT.mkdir(exist_ok=True)
        name = uuid.uuid4().hex[:6]
        command = [
            sys.executable, "-m", "celery", "-A", "sociomile", "beat", "--loglevel", "INFO",
            # How often beat wakes up at most, and so how fast it sees a schedule changed in the database.
            "--max-interval", str(max_interval),
            "--pidfile", "", "--schedule", str(TEST_OUTPUT / f"beat-{name}.schedule"),
        ]  # fmt: skip
        super().__init__(log_name=f"beat-{name}", command=command)
        wait_for(lambda: "beat: Starting" in self.log() or self.process.poll() is not None,
                 timeout=30, message="beat to start")  # fmt: skip
        if self.process.poll() is not None:
            pytest.fail(f"beat exited at start:\n{self.log()}")

    def stop(self, timeout: float = 15) -> int:
        return super().stop(timeout)


@pytest.fixture
def celery_beat(live_db):
    beat = BeatProcess()
    yield beat
    beat.stop()
