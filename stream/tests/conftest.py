"""The stream's fixtures: the real ASGI process (uvicorn) on the test database and Redis."""

import socket
import sys

import pytest
import requests
from django.conf import settings

from core.tests.fixtures.workers import ChildProcess
from core.tests.support import wait_for


class StreamServer(ChildProcess):
    """`uvicorn sociomile.asgi:application` on 127.0.0.1:<free port>, as bin/dev runs it; hosts by Host header."""

    def __init__(self, *, name: str, extra_env: dict | None = None):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [
            sys.executable, "-m", "uvicorn", "sociomile.asgi:application", "--host", "127.0.0.1",
            "--port", str(self.port), "--no-access-log", "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip
        super().__init__(log_name=f"uvicorn-{name}", command=command, extra_env=extra_env)
        try:
            wait_for(self._answers, timeout=90, interval=0.2, message="uvicorn to answer /health")
        except BaseException:
            self.stop()
            raise

    def url(self, tenant=None) -> str:
        host = settings.BASE_DOMAIN if tenant is None else f"{tenant.schema_name}.{settings.BASE_DOMAIN}"
        return f"http://{host}:{self.port}"

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited at start:\n{self.log_path.read_text()}")
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/health", headers={"Host": settings.BASE_DOMAIN}, timeout=30).ok
        except (requests.ConnectionError, requests.Timeout):
            return False


@pytest.fixture(scope="module")
def stream_server(django_db_setup):
    # Keep-alives every second, so a test sees one without waiting 15 s.
    server = StreamServer(name="stream", extra_env={"STREAM_HEARTBEAT_SECONDS": "1"})
    yield server
    server.stop()
