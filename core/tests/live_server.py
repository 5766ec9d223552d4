"""A real HTTP server (gunicorn) on the test database and Redis, for tests that speak HTTP over a socket.

pytest-django's `live_server` needs `transactional_db`, whose teardown flushes the public schema's tables:
that would delete the session tenants every other test uses. A gunicorn subprocess on the committed
test database has no such side effect, and it is the server production runs.
"""

import socket
import sys

import requests
from django.conf import settings

from core.tests.fixtures.workers import ChildProcess

from core.tests.support import wait_for


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer(ChildProcess):
    """`gunicorn sociomile.wsgi` on 127.0.0.1:<free port>; hosts are chosen with the Host header."""

    def __init__(self, *, name: str, threads: int = 4):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "gunicorn", "sociomile.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
            "--workers", "1", "--worker-class", "gthread", "--threads", str(threads), "--timeout", "150",
            "--access-logfile", "-", "--error-logfile", "-", "--graceful-timeout", "5",
            # Several servers (tests, bench, other checkouts) run at once: no shared control socket.
            "--no-control-socket",
        ]  # fmt: skip
        super().__init__(log_name=f"gunicorn-{name}", command=command)
        try:
            wait_for(self._answers, timeout=90, interval=0.2, message="gunicorn to answer /health")
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited at start:\n{self.log_path.read_text()}")
        try:
            # The first request imports and connects everything: slow on a busy machine.
            return requests.get(f"{self.url}/health", headers={"Host": settings.BASE_DOMAIN}, timeout=30).ok
        except (requests.ConnectionError, requests.Timeout):
            return False
