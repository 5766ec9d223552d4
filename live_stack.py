"""A whole Sociomile of its own, for the tests that break its dependencies (fault and soak tests).

`LiveStack` runs its own PostgreSQL cluster, Redis server and RabbitMQ node (separate from the ones
`bin/test` started, because these tests kill and restart them), migrates the schema, and serves the app the way production
does: gunicorn (gthread) on production settings, Celery worker processes and celery-beat; optionally several
gunicorn instances, the stream's uvicorn process and nginx in front of them, on the proxy configuration
docker-compose.yml runs (`deploy/nginx.conf.template`; the production topology of docs/operations.md). Tests talk
to it only from the outside: HTTP to gunicorn (or the proxy), SQL to its PostgreSQL, commands to its Redis and RabbitMQ.

Redis runs with the documented production persistence, AOF with `appendfsync everysec` (see
docs/configuration.md, "Redis persistence"); PostgreSQL with `fsync=off` (the faults are process deaths,
which the OS page cache survives). Recovery timings
that are minutes in production (leases, sweeps) are seconds here: `FAST_ENV`.

Also usable by hand: `python live_stack.py` starts a stack, prints its URLs and waits for Ctrl-C
(`python live_stack.py topology`: two webs and the stream behind nginx).
"""

import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parent
# The reverse proxy's configuration: the same file docker-compose.yml mounts into the official nginx image.
PROXY_TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
PASSWORD = "stack-password-1234"
BASE_DOMAIN = "localhost"

# Recovery paths that take minutes in production come back in seconds (all kept consistent with each
# other: a batch fits in the drain lease).
FAST_ENV = {
    "CELERY_TASK_SOFT_TIME_LIMIT": "8",
    "CELERY_TASK_TIME_LIMIT": "10",
    "TENANT_SLOT_LEASE_SECONDS": "3",
    "TENANT_QUEUE_SYNC_SECONDS": "1",
    "CREATIONS_LOCK_LEASE_SECONDS": "5",
    "CREATIONS_SWEEP_SECONDS": "3",
    "ASSIGNMENT_SWEEP_SECONDS": "3",
    # The load generators send far more than a real channel would; the rate limit has its own tests.
    "WEBHOOK_RATE_LIMIT": "1000000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.05):
    """Polls until predicate() is truthy and returns its value; TimeoutError after `timeout` seconds."""
    deadline, last_error = time.monotonic() + timeout, None
    while True:
        try:
            value = predicate()
        except Exception as error:  # a dependency being down is what these tests wait out
            value, last_error = None, error
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        time.sleep(interval)


def _pg_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
    if candidates:
        return candidates[-1]
    return Path(shutil.which("initdb")).parent


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user (as in bin/lib.sh).
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a Celery worker's pool, gunicorn's workers), from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return children


@dataclass
class TenantHandle:
    """What `bootstrap` made for one tenant: its host, the application, tokens, agent ids."""

    slug: str
    app_token: str
    app_id: int
    webhook_secret: str
    admin_token: str
    agents: dict[int, str] = field(default_factory=dict)  # agent id -> token
    max_customers: int = 2

    @property
    def host(self) -> str:
        return f"{self.slug}.{BASE_DOMAIN}"


class LiveStack:
    """PostgreSQL, Redis, gunicorn, Celery workers and beat in a folder of their own (see the module doc)."""

    def __init__(self, *, workers: int = 2, worker_concurrency: int = 2, web_workers: int = 2, web_threads: int = 8,
                 beat: bool = True, extra_env: dict | None = None, stream: bool = False, webs: int = 1,
                 proxy: bool = False):  # fmt: skip
        self.dir = Path(tempfile.mkdtemp(prefix="sociomile-stack-"))
        os.chmod(self.dir, 0o755)
        self.pg_bin = _pg_bindir()
        self.pg_data = self.dir / "postgres"
        self.pg_port = free_port()
        self.redis_dir = self.dir / "redis"
        self.redis_port = free_port()
        self.rabbitmq_dir = self.dir / "rabbitmq"
        self.amqp_port, self.amqp_dist_port = free_port(), free_port()
        # One name for the node's whole life: its durable queues and messages live under it across restarts.
        self.rabbitmq_node = f"sociomile-stack-{os.getpid()}-{self.amqp_port}@localhost"
        # `webs` gunicorn instances, each with `web_workers` processes of `web_threads` threads.
        self.web_ports = [free_port() for _ in range(webs)]
        self.web_port = self.web_ports[0]
        self.worker_count, self.worker_concurrency = workers, worker_concurrency
        self.web_workers, self.web_threads, self.with_beat = web_workers, web_threads, beat
        self.database_url = f"postgres://sociomile@127.0.0.1:{self.pg_port}/sociomile"
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.broker_url = f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "sociomile.settings.production",
            "SECRET_KEY": "live-stack-only-secret-key-0123456789abcdef",
            # Plain HTTP on loopback, and the soak's outbound receiver listens there too (docs/security.md).
            "SECURE_COOKIES": "false",
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_HSTS_SECONDS": "0",
            "OUTBOUND_WEBHOOK_ALLOW_PRIVATE": "true",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.broker_url,
            "LOG_LEVEL": "INFO",
            **FAST_ENV,
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list = []
        self.web_urls = [f"http://127.0.0.1:{port}" for port in self.web_ports]
        # The ASGI process of the real-time stream (uvicorn), for the tests that ask for it (stream=True).
        self.with_stream = stream
        self.stream_port = free_port()
        self.stream_url = f"http://127.0.0.1:{self.stream_port}"
        # nginx in front of the webs and the stream (proxy=True), as docker-compose.yml runs it.
        self.with_proxy = proxy
        self.proxy_dir = self.dir / "proxy"
        self.proxy_port = free_port()
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        # Where every request of the tests goes: the proxy if there is one, else the (first) web.
        self.web_url = self.proxy_url if proxy else self.web_urls[0]

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> "LiveStack":
        self.pg_start(initialise=True)
        self._psql_admin("CREATE ROLE sociomile LOGIN CREATEDB")
        self._psql_admin("CREATE DATABASE sociomile OWNER sociomile")
        self.redis_start()
        self.rabbitmq_start()
        self.manage("migrate_schemas", "--noinput")
        for index in range(len(self.web_ports)):
            self.web_start(index)
        if self.with_stream:
            self.stream_start()
        if self.with_proxy:
            self.proxy_start()
        for index in range(self.worker_count):
            self.worker_start(index, wait=False)
        if self.with_beat:
            self._spawn("beat", [sys.executable, "-m", "celery", "-A", "sociomile", "beat", "--loglevel", "INFO",
                                 "--pidfile", str(self.dir / "beat.pid")])  # fmt: skip
        for index in range(self.worker_count):
            self.worker_wait_ready(index)
        return self

    def stop(self) -> None:
        # The whole stack is thrown away: no graceful shutdown to wait for. Each process leads its own
        # process group (start_new_session), so this also ends gunicorn's and Celery's children.
        for name, process in list(self.processes.items()):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            del self.processes[name]
        for log in self._logs:
            log.close()
        # Kept for a look after the run, next to the other workers' logs of the suite.
        kept = ROOT / "test-output" / "live-stack"
        kept.mkdir(parents=True, exist_ok=True)
        for log in [*self.dir.glob("*.log"), self.redis_dir / "redis.log", self.pg_data / "server.log",
                    self.proxy_dir / "access.log", self.proxy_dir / "error.log"]:  # fmt: skip
            if log.exists():
                shutil.copy(log, kept / f"{log.parent.name}-{log.name}" if log.parent != self.dir else kept / log.name)
        self.redis_stop(graceful=False)
        self.rabbitmq_stop(graceful=True)
        self.pg_stop()
        if os.environ.get("SOCIOMILE_KEEP_STACK"):
            print(f"stack kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "a")
        self._logs.append(log)
        process = subprocess.Popen(command, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    # --- PostgreSQL -------------------------------------------------------------------------------------

    def pg_start(self, *, initialise: bool = False) -> None:
        if initialise:
            self.pg_data.mkdir()
            if os.geteuid() == 0:
                shutil.chown(self.pg_data, "postgres")
            os.chmod(self.pg_data, 0o700)
            subprocess.run(_as_postgres([str(self.pg_bin / "initdb"), "-D", str(self.pg_data), "-U", "postgres",
                                         "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                           check=True, capture_output=True)  # fmt: skip
        # fsync off: the faults injected are process deaths, which the OS page cache survives; it only
        # matters for a lost machine, and saves seconds of migrations on a busy test machine.
        options = (f"-p {self.pg_port} -k {self.pg_data} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   "-c fsync=off")  # fmt: skip
        subprocess.run(_as_postgres([str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-l",
                                     str(self.pg_data / "server.log"), "-w", "-t", "60", "-o", options, "start"]),
                       check=True, capture_output=True)  # fmt: skip

    def pg_stop(self, *, mode: str = "fast") -> None:
        if (self.pg_data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-m", mode, "-w",
                                         "stop"]), capture_output=True)  # fmt: skip

    def _psql_admin(self, statement: str) -> None:
        subprocess.run([str(self.pg_bin / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres",
                        "-d", "postgres", "-qAt", "-c", statement], check=True, capture_output=True)  # fmt: skip

    def sql(self, query: str, params: tuple | list = ()) -> list[tuple]:
        """Runs one query on the stack's database (a fresh connection: it must work after a restart)."""
        with psycopg.connect(self.database_url, connect_timeout=5, autocommit=True) as conn:
            rows = conn.execute(query, params)
            return rows.fetchall() if rows.description else []

    # --- Redis ------------------------------------------------------------------------------------------

    def redis_start(self) -> None:
        self.redis_dir.mkdir(exist_ok=True)
        subprocess.run(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--daemonize", "yes",
                        "--dir", str(self.redis_dir), "--pidfile", str(self.redis_dir / "redis.pid"),
                        "--logfile", str(self.redis_dir / "redis.log"),
                        # The production setting (docs/configuration.md): every accepted write is in the AOF
                        # before its reply, fsynced within a second.
                        "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
                       check=True, capture_output=True)  # fmt: skip
        wait_until(lambda: self.redis().ping(), timeout=30, what="redis to accept connections")

    def redis_pid(self) -> int | None:
        try:
            return int((self.redis_dir / "redis.pid").read_text())
        except (OSError, ValueError):
            return None

    def redis_stop(self, *, graceful: bool) -> None:
        """graceful: SHUTDOWN (Redis writes out what it has); else SIGKILL, as when the process dies."""
        pid = self.redis_pid()
        if pid is None:
            return
        try:
            if graceful:
                self.redis().shutdown()
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, redis.ConnectionError):
            pass

        def gone():
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True

        wait_until(gone, timeout=20, what="redis to exit")
        (self.redis_dir / "redis.pid").unlink(missing_ok=True)

    # --- RabbitMQ (the Celery broker) ---------------------------------------------------------------------

    def rabbitmq_start(self) -> None:
        """Starts (or restarts, with its queues and messages) the stack's node, by bin/lib.sh's recipe."""
        script = 'source "$0/bin/lib.sh"; rabbitmq_start "$1" "$2" "$3" "$4"'
        subprocess.run(["bash", "-c", script, str(ROOT), str(self.rabbitmq_dir), str(self.amqp_port),
                        str(self.amqp_dist_port), self.rabbitmq_node], check=True, stdout=subprocess.DEVNULL)  # fmt: skip

    def rabbitmq_pid(self) -> int | None:
        try:
            return int((self.rabbitmq_dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def rabbitmq_stop(self, *, graceful: bool) -> None:
        """graceful: `rabbitmqctl stop`; else SIGKILL to the node's VM, as when the process dies."""
        if graceful:
            script = 'source "$0/bin/lib.sh"; rabbitmq_stop "$1"'
            subprocess.run(["bash", "-c", script, str(ROOT), str(self.rabbitmq_dir)], check=False)
            return
        pid = self.rabbitmq_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return

        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

        wait_until(gone, timeout=20, what="rabbitmq to exit")
        (self.rabbitmq_dir / "pid").unlink(missing_ok=True)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)

    # --- web and workers --------------------------------------------------------------------------------

    def web_name(self, index: int) -> str:
        return f"web{index}"

    def web_start(self, index: int = 0) -> None:
        """Starts (or restarts, on the same port) gunicorn instance `index` and waits for its /health."""
        url = self.web_urls[index]
        self._spawn(self.web_name(index), [sys.executable, "-m", "gunicorn", "sociomile.wsgi:application",
                                           "--bind", url.removeprefix("http://"), "--workers", str(self.web_workers),
                                           "--worker-class", "gthread", "--threads", str(self.web_threads),
                                           "--backlog", "2048", "--timeout", "60", "--graceful-timeout", "10"])  # fmt: skip
        wait_until(lambda: requests.get(f"{url}/health", headers={"Host": BASE_DOMAIN}, timeout=2).ok,
                   timeout=60, what=f"gunicorn {index} to answer /health")  # fmt: skip

    def web_kill(self, index: int) -> None:
        """SIGKILL to gunicorn instance `index`, its master and workers (its process group), as when its machine is lost."""
        process = self.processes.pop(self.web_name(index))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)

    def web_index_of(self, upstream: str) -> int:
        """Which web instance an address of the proxy's log (`127.0.0.1:<port>`) is."""
        return self.web_ports.index(int(upstream.rsplit(":", 1)[1]))

    # --- the reverse proxy (nginx) ------------------------------------------------------------------------

    def proxy_start(self) -> None:
        """Debian's nginx on deploy/nginx.conf.template, rendered as the official image renders it in
        docker-compose.yml, with this stack's ports. bin/test installs nginx when it is missing."""
        self.proxy_dir.mkdir(exist_ok=True)
        (self.proxy_dir / "sociomile.conf").write_text(proxy_config_render(PROXY_TEMPLATE.read_text(), self.proxy_config_values()))
        # What the official image's own nginx.conf gives the included file: an http block. Temporary files and the
        # pid in the stack's folder (nginx, started as root, makes them for its worker's user).
        temp_paths = "\n".join(f"    {kind}_temp_path {self.proxy_dir / kind};"
                                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
        (self.proxy_dir / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {self.proxy_dir / 'nginx.pid'};\n"
            f"error_log {self.proxy_dir / 'error.log'} warn;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n{temp_paths}\n    include {self.proxy_dir / 'sociomile.conf'};\n}}\n"
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._spawn("proxy", [nginx, "-p", str(self.proxy_dir), "-e", str(self.proxy_dir / "error.log"),
                              "-c", str(self.proxy_dir / "nginx.conf")])  # fmt: skip
        wait_until(lambda: self.processes["proxy"].poll() is not None
                   or requests.get(f"{self.proxy_url}/health/live", timeout=2).ok, timeout=30, what="nginx to answer")  # fmt: skip
        if self.processes["proxy"].poll() is not None:
            raise RuntimeError(f"nginx exited at start:\n{self.log('proxy')}\n{(self.proxy_dir / 'error.log').read_text()}")

    def proxy_config_values(self) -> dict[str, str]:
        """The template's placeholders for this stack (docker-compose.yml's proxy gives the same names)."""
        return {
            "SOCIOMILE_PROXY_LISTEN": f"127.0.0.1:{self.proxy_port}",
            "SOCIOMILE_WEB_SERVERS": "\n    ".join(f"server {url.removeprefix('http://')};" for url in self.web_urls),
            "SOCIOMILE_STREAM_SERVERS": f"server 127.0.0.1:{self.stream_port};",
            "SOCIOMILE_PROXY_ACCESS_LOG": str(self.proxy_dir / "access.log"),
            "BASE_DOMAIN": BASE_DOMAIN,
        }

    def proxy_access_log(self) -> list[dict]:
        """The proxy's access log so far, one dict per request (deploy/nginx.conf.template's `sociomile_json`)."""
        path = self.proxy_dir / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.endswith("}")]

    def proxy_upstream_of(self, request_id: str) -> str | None:
        """The address that served the request sent with this X-Request-ID, once the proxy has logged it."""
        for entry in self.proxy_access_log():
            if entry["request_id"] == request_id:
                return entry["upstream"]
        return None

    def stream_start(self) -> None:
        """The stream's ASGI process as production runs it (bin/dev, docker-compose.yml): uvicorn on the stack."""
        self._spawn("stream", [sys.executable, "-m", "uvicorn", "sociomile.asgi:application", "--host", "127.0.0.1",
                               "--port", str(self.stream_port), "--no-access-log", "--timeout-graceful-shutdown", "5"])  # fmt: skip
        wait_until(lambda: requests.get(f"{self.stream_url}/health", headers={"Host": BASE_DOMAIN}, timeout=2).ok,
                   timeout=60, what="uvicorn to answer /health")  # fmt: skip

    def worker_name(self, index: int) -> str:
        return f"worker{index}"

    def worker_start(self, index: int, *, wait: bool = True) -> None:
        name = self.worker_name(index)
        # Its own application_name, so pg_stat_activity tells which worker runs which query.
        env = {**self.env, "DATABASE_URL": f"{self.database_url}?application_name={name}"}
        self._spawn(name, [sys.executable, "-m", "celery", "-A", "sociomile", "worker", "-Q", "platform",
                           "--pool", "prefork", "--concurrency", str(self.worker_concurrency),
                           "--hostname", f"{name}-{self.web_port}@%h", "--without-mingle", "--without-gossip",
                           "--loglevel", "INFO"], env=env)  # fmt: skip
        if wait:
            self.worker_wait_ready(index)

    def worker_wait_ready(self, index: int) -> None:
        name = self.worker_name(index)
        wait_until(lambda: "ready." in self.log(name) or self.processes[name].poll() is not None,
                   timeout=90, what=f"{name} to start")  # fmt: skip
        if self.processes[name].poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{self.log(name)}")

    def worker_kill(self, index: int) -> None:
        """SIGKILL to the worker's main process and every pool process, as when its machine is lost."""
        process = self.processes[self.worker_name(index)]
        for pid in [process.pid, *child_pids(process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=20)

    # --- tenants ----------------------------------------------------------------------------------------

    def bootstrap(self, *, slug: str, agents: int = 0, max_customers: int = 2, concurrency: int = 3) -> TenantHandle:
        """A committed tenant with one application, its admin's token and `agents` online agents."""
        spec = json.dumps({"slug": slug, "agents": agents, "max_customers": max_customers, "concurrency": concurrency})
        result = subprocess.run([sys.executable, str(ROOT / "live_stack.py"), "bootstrap", spec], cwd=ROOT,
                                env=self.env, capture_output=True, text=True, timeout=300)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"bootstrap failed:\n{result.stdout}\n{result.stderr}")
        made = json.loads(result.stdout.strip().splitlines()[-1])
        made["agents"] = {int(agent_id): token for agent_id, token in made["agents"].items()}
        return TenantHandle(**made)

    # --- HTTP -------------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        return requests.Session()

    def request(self, session: requests.Session, method: str, path: str, *, host: str = BASE_DOMAIN,
                token: str | None = None, json_body=None, data: bytes | None = None, headers: dict | None = None,
                timeout: float = 10) -> requests.Response:  # fmt: skip
        all_headers = {"Host": host, **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Token {token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        return session.request(method, f"{self.web_url}{path}", data=data, headers=all_headers, timeout=timeout)

    def health(self, session: requests.Session | None = None, *, host: str = BASE_DOMAIN) -> tuple[int, dict]:
        response = (session or requests).get(f"{self.web_url}/health", headers={"Host": host}, timeout=5)
        return response.status_code, response.json()


def proxy_config_render(template: str, values: dict[str, str]) -> str:
    """Fills the template's ${NAME} placeholders as the official nginx image does (envsubst with the
    environment's names); nginx's own $variables are left alone. Every placeholder must be given a value."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    missing = sorted(set(re.findall(r"\$\{(\w+)\}", template)))
    if missing:
        raise ValueError(f"no value for {missing} in the proxy template")
    return template


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HealthPoller:
    """Polls /health in a thread and keeps every answer: (monotonic time, status, body or error)."""

    def __init__(self, stack: LiveStack, *, interval: float = 0.1, host: str = BASE_DOMAIN):
        self.stack, self.interval, self.host = stack, interval, host
        self.answers: list[tuple[float, int, dict | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HealthPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            at = time.monotonic()
            try:
                status, body = self.stack.health(session, host=self.host)
            except Exception as error:  # no answer at all is recorded too: the tests fail on it
                status, body = 0, f"{error.__class__.__name__}: {error}"
                session = requests.Session()
            self.answers.append((at, status, body))
            self._stop.wait(self.interval)

    def between(self, start: float, end: float) -> list[tuple[float, int, dict | str]]:
        return [answer for answer in self.answers if start <= answer[0] <= end]


class CreationLoad:
    """Threads that keep creating chats, messages and inbound webhook messages, and keep every answer.

    Every request carries a unique marker (a chat's customer id, a message's body), so the database can
    be asked afterwards whether each accepted creation exists exactly once, and whether any request
    (answered or not) was ever persisted twice.
    """

    def __init__(self, stack: LiveStack, tenant: TenantHandle, *, threads: int = 6, pause: float = 0.0):
        self.stack, self.tenant, self.pause = stack, tenant, pause
        self.run_id = os.urandom(3).hex()  # markers stay unique across loads on the same application
        self.lock = threading.Lock()
        self.chats: list[tuple[str, int, float]] = []  # (customer_id, number, answered at)
        self.messages: list[tuple[int, int, str]] = []  # (chat number, number, body)
        self.webhooks: list[tuple[str, str, int, int]] = []  # (customer_id, body, chat number, message number)
        self.failures: list[tuple[str, int, str]] = []  # (kind, status or 0 for no answer, body)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(index,), daemon=True) for index in range(threads)]

    def __enter__(self) -> "CreationLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def accepted(self) -> int:
        return len(self.chats) + len(self.messages) + len(self.webhooks)

    def accepted_chats_since(self, at: float) -> list[tuple[str, int, float]]:
        return [chat for chat in self.chats if chat[2] >= at]

    def _run(self, index: int) -> None:
        session = self.stack.session()
        tenant, base = self.tenant, f"/api/applications/{self.tenant.app_token}"
        own_chats: list[int] = []
        step = 0
        while not self._stop.is_set():
            step += 1
            marker = f"{self.run_id}-{index}-{step}"
            kind = "chat" if not own_chats or step % 5 == 0 else ("webhook" if step % 5 == 1 else "message")
            try:
                if kind == "chat":
                    response = self.stack.request(session, "POST", f"{base}/chats", host=tenant.host,
                                                  json_body={"customer_id": f"c-{marker}"})  # fmt: skip
                elif kind == "message":
                    chat_number = own_chats[step % len(own_chats)]
                    response = self.stack.request(session, "POST", f"{base}/chats/{chat_number}/messages",
                                                  host=tenant.host, json_body={"body": f"m-{marker}"})  # fmt: skip
                else:
                    body = json.dumps({"customer_id": f"w-{self.run_id}-{index}-{step % 7}", "message": f"w-{marker}"}).encode()
                    response = self.stack.request(
                        session, "POST", f"/api/channels/{tenant.app_token}/webhook", host=tenant.host, data=body,
                        headers={"X-Sociomile-Signature": webhook_signature(tenant.webhook_secret, body)},
                    )
            except requests.RequestException as error:
                with self.lock:
                    self.failures.append((kind, 0, f"{error.__class__.__name__}: {error}"))
                session = self.stack.session()
                continue
            answered_at = time.monotonic()
            with self.lock:
                if not 200 <= response.status_code < 300:
                    self.failures.append((kind, response.status_code, response.text[:500]))
                elif kind == "chat":
                    number = response.json()["number"]
                    self.chats.append((f"c-{marker}", number, answered_at))
                    own_chats.append(number)
                    del own_chats[:-3]
                elif kind == "message":
                    self.messages.append((chat_number, response.json()["number"], f"m-{marker}"))
                else:
                    answer = response.json()
                    self.webhooks.append((f"w-{self.run_id}-{index}-{step % 7}", f"w-{marker}", answer["chat_number"],
                                          answer["message_number"]))  # fmt: skip
            if self.pause:
                time.sleep(self.pause)


def drained(stack: LiveStack, tenant: TenantHandle) -> bool:
    """True when no queued creation of the tenant waits in Redis and no drain holds its lock."""
    client = stack.redis()
    return client.llen(f"sociomile:{tenant.slug}:creations") == 0 and not client.exists(f"sociomile:{tenant.slug}:creations:lock")


def creations_check(stack: LiveStack, tenant: TenantHandle, load: CreationLoad) -> dict:
    """Compares what the database holds with what was answered 2xx; returns a list of problems per kind.

    Empty lists everywhere mean: every accepted creation exists exactly once with the number it was
    answered, no request was persisted twice, numbers are contiguous from 1 (per application and per
    chat) up to Redis' counters, and chats_count / messages_count are exact.
    """
    schema = tenant.slug
    problems: dict[str, list] = {"chats": [], "messages": [], "counts": [], "duplicates": []}
    chats = stack.sql(f'SELECT id, number, customer_id, messages_count FROM "{schema}".conversations_chat '
                      "WHERE application_id = %s", [tenant.app_id])  # fmt: skip
    messages = stack.sql(f'SELECT c.number, m.number, m.body FROM "{schema}".conversations_message m '
                         f'JOIN "{schema}".conversations_chat c ON c.id = m.chat_id WHERE c.application_id = %s',
                         [tenant.app_id])  # fmt: skip
    [(chats_count,)] = stack.sql(f'SELECT chats_count FROM "{schema}".conversations_application WHERE id = %s',
                                 [tenant.app_id])  # fmt: skip
    numbers = sorted(row[1] for row in chats)
    counter = int(stack.redis().get(f"sociomile:{schema}:app:{tenant.app_id}:chats") or 0)
    if numbers != list(range(1, counter + 1)):
        missing = sorted(set(range(1, counter + 1)) - set(numbers))
        problems["chats"].append(f"chat numbers not 1..{counter}: {len(numbers)} rows, missing {missing[:20]}")
    if chats_count != len(chats):
        problems["counts"].append(f"chats_count {chats_count} != {len(chats)} rows")
    by_customer: dict[str, list[int]] = {}
    for _id, number, customer_id, _count in chats:
        by_customer.setdefault(customer_id, []).append(number)
    for customer_id, chat_numbers in by_customer.items():
        if customer_id and customer_id.startswith("c-") and len(chat_numbers) > 1:
            problems["duplicates"].append(f"chat request {customer_id} persisted as {chat_numbers}")
    for customer_id, number, _at in load.chats:
        if by_customer.get(customer_id) != [number]:
            problems["chats"].append(f"accepted chat {customer_id} #{number}: rows {by_customer.get(customer_id)}")
    per_chat: dict[int, list[int]] = {}
    by_body: dict[str, list[tuple[int, int]]] = {}
    for chat_number, number, body in messages:
        per_chat.setdefault(chat_number, []).append(number)
        by_body.setdefault(body, []).append((chat_number, number))
    counters = stack.redis().mget([f"sociomile:{schema}:app:{tenant.app_id}:chat:{row[1]}:messages" for row in chats]) if chats else []
    for (_id, chat_number, _customer, messages_count), counter in zip(chats, counters, strict=True):
        got = sorted(per_chat.get(chat_number, []))
        if got != list(range(1, int(counter or 0) + 1)):
            problems["messages"].append(f"chat {chat_number}: message numbers {got[:10]}... not 1..{counter}")
        if messages_count != len(got):
            problems["counts"].append(f"chat {chat_number}: messages_count {messages_count} != {len(got)} rows")
    for body, places in by_body.items():
        if len(places) > 1:
            problems["duplicates"].append(f"message {body} persisted {len(places)} times: {places}")
    for chat_number, number, body in load.messages:
        if by_body.get(body) != [(chat_number, number)]:
            problems["messages"].append(f"accepted message {body} {chat_number}/{number}: rows {by_body.get(body)}")
    for _customer, body, chat_number, number in load.webhooks:
        if by_body.get(body) != [(chat_number, number)]:
            problems["messages"].append(f"accepted webhook {body} {chat_number}/{number}: rows {by_body.get(body)}")
    return problems


# --- run inside the stack's own Django (a subprocess with the stack's environment) -----------------------


def _bootstrap(spec: dict) -> dict:
    import django

    django.setup()
    from django_tenants.utils import schema_context

    from agents.services import agent_create
    from conversations.services import application_create
    from core.models import User
    from core.services import user_token_get_or_create
    from tenants.services import tenant_create

    slug = spec["slug"]
    tenant = tenant_create(name=slug.title(), slug=slug, admin_email=f"admin@{slug}.test", admin_password=PASSWORD,
                           concurrency=spec["concurrency"])  # fmt: skip
    with schema_context(tenant.schema_name):
        application = application_create(name=f"{slug} app")
        admin = User.objects.get(email=f"admin@{slug}.test")
        agents = {}
        for index in range(spec["agents"]):
            agent = agent_create(email=f"agent{index}@{slug}.test", password=PASSWORD, is_online=True,
                                 max_customers=spec["max_customers"])  # fmt: skip
            agents[agent.pk] = user_token_get_or_create(user=agent.user).key
        return {
            "slug": slug,
            "app_token": application.token,
            "app_id": application.id,
            "webhook_secret": application.webhook_secret,
            "admin_token": user_token_get_or_create(user=admin).key,
            "agents": agents,
            "max_customers": spec["max_customers"],
        }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "bootstrap":
        print(json.dumps(_bootstrap(json.loads(sys.argv[2]))))
    else:
        # `python live_stack.py topology`: the production topology (two webs, the stream, nginx in front).
        topology = sys.argv[1:] == ["topology"]
        stack = LiveStack(webs=2, stream=True, proxy=True) if topology else LiveStack()
        stack.start()
        handle = stack.bootstrap(slug="demo", agents=3)
        print(f"{'proxy' if topology else 'web'} {stack.web_url} (Host: {handle.host}), postgres {stack.database_url}, "
              f"redis {stack.redis_url}, broker {stack.broker_url}")
        print(json.dumps(handle.__dict__, indent=2))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            stack.stop()
