"""The suite's fixtures live in fixture modules, one per concern, registered here (as Saleor does); helpers
that test modules import are in core/tests/support.py. Tests run against real PostgreSQL, Redis and RabbitMQ
(started by bin/test): two tenants made once per session, API clients per host, and real Celery worker
processes for the flows that promise asynchrony."""

pytest_plugins = [
    "core.tests.fixtures.database",
    "core.tests.fixtures.clients",
    "core.tests.fixtures.webhooks",
    "core.tests.fixtures.workers",
]


# --- a whole stack of its own, for the tests that break PostgreSQL, Redis and workers ---------------------


def pytest_addoption(parser):
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=30.0,
        help="how long the soak test (core/tests/live/test_soak.py) drives 64 clients; 30 s in the suite",
    )
