"""The stack the fault and soak tests break: one for this package, stopped as soon as its last test ends,
so its processes do not load the machine while the rest of the suite runs."""

import pytest


@pytest.fixture(scope="package")
def live_stack():
    """A LiveStack (live_stack.py): its own PostgreSQL, Redis, gunicorn, two Celery workers and beat, on
    production settings. Its logs are copied to test-output/live-stack/ when it stops. Drain batches are
    large (5,000), so a worker can be killed mid-batch."""
    from live_stack import LiveStack

    stack = LiveStack(extra_env={"CREATIONS_BATCH_SIZE": "5000"})
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
