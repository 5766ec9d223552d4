"""The production topology of docker-compose.yml, without Docker: nginx (Debian's package) on the same
deploy/nginx.conf.template in front of two gunicorn instances and the stream's uvicorn process, two Celery workers,
beat, RabbitMQ, PostgreSQL and Redis (live_stack.LiveStack with webs=2, proxy=True; docs/operations.md).

Which instance served a request is read from the proxy's access log (its `upstream`), found by the X-Request-ID the
test sent with it.
"""

import json
import re
import threading
import uuid

import pytest
import requests

from live_stack import BASE_DOMAIN, CreationLoad, LiveStack, creations_check, drained, wait_until

pytestmark = [pytest.mark.fault]

# Clients of the kill test: at most this many requests are in flight when a web dies.
LOAD_THREADS = 4


@pytest.fixture(scope="module")
def topology():
    # Small instances: the point is how many there are and what sits between them, not their size.
    stack = LiveStack(webs=2, workers=2, worker_concurrency=1, web_workers=1, web_threads=4, stream=True, proxy=True,
                      extra_env={"CREATIONS_BATCH_SIZE": "500"})  # fmt: skip
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def tenant(topology):
    return topology.bootstrap(slug="topology", agents=2, max_customers=1000)


def _send(stack, method: str, path: str, *, host: str, token: str | None = None, json_body=None,
          session: requests.Session | None = None) -> tuple[requests.Response, int]:  # fmt: skip
    """A request through the proxy, and the index of the web instance that served it (from the proxy's log)."""
    request_id = f"topology-{uuid.uuid4().hex}"
    response = stack.request(session or stack.session(), method, path, host=host, token=token, json_body=json_body,
                             headers={"X-Request-ID": request_id})  # fmt: skip
    upstream = wait_until(lambda: stack.proxy_upstream_of(request_id), timeout=5, what=f"the proxy's log of {request_id}")
    return response, stack.web_index_of(upstream)


def _chat_tasks_run(stack) -> int:
    """How many times the workers' logs name the tasks that persist and assign chats (the drain assigns the chats
    it inserts, or an assignment run does)."""
    logs = [stack.log(stack.worker_name(index)) for index in range(stack.worker_count)]
    return sum(log.count("creations_persist_task") + log.count("assignment_run_task") for log in logs)


def test_a_chat_created_through_one_web_is_assigned_by_a_worker_and_read_through_the_other(topology, tenant):
    stack = topology
    runs_before = _chat_tasks_run(stack)
    # given a chat created through the proxy, which sent it to one web
    response, created_on = _send(stack, "POST", f"/api/applications/{tenant.app_token}/chats", host=tenant.host,
                                 json_body={"customer_id": "topology-customer"})  # fmt: skip
    assert response.status_code == 202, response.text
    number = response.json()["number"]

    # when it is read through the proxy until the other web serves it assigned
    seen = []

    def read_assigned_on_the_other_web():
        answer, served_on = _send(stack, "GET", f"/api/applications/{tenant.app_token}/chats/{number}",
                                  host=tenant.host, token=tenant.admin_token)  # fmt: skip
        seen.append((served_on, answer.status_code, answer.text[:200]))
        if served_on != created_on and answer.status_code == 200 and answer.json()["status"] == "assigned":
            return answer.json()
        return None

    chat = wait_until(read_assigned_on_the_other_web, timeout=30, interval=0.1, what=f"chat {number} read assigned")

    # then a worker persisted and assigned it, and the other web read it from the shared database
    assert chat["number"] == number and chat["customer_id"] == "topology-customer"
    assert chat["assigned_agent"] in tenant.agents, seen
    assert _chat_tasks_run(stack) > runs_before, "no worker persisted or assigned it"


def test_the_stream_through_the_proxy_delivers_an_event(topology, tenant):
    stack = topology
    # given a stream opened through the proxy (the ticket from a web, the stream from uvicorn)
    ticket_response, _web = _send(stack, "POST", "/api/stream/ticket", host=tenant.host, token=tenant.admin_token)
    assert ticket_response.status_code == 201, ticket_response.text
    request_id = f"topology-stream-{uuid.uuid4().hex}"
    stream = requests.get(f"{stack.proxy_url}/api/stream?ticket={ticket_response.json()['ticket']}",
                          headers={"Host": tenant.host, "X-Request-ID": request_id}, stream=True, timeout=30)  # fmt: skip
    frames: list[dict] = []

    def read():
        frame: dict = {}
        try:
            for line in stream.iter_lines(decode_unicode=True):
                if line == "":
                    if "data" in frame:
                        frames.append({**frame, "data": json.loads(frame["data"])})
                    frame = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    frame[field] = value
        except Exception:
            pass  # closed by the test

    reader = threading.Thread(target=read, daemon=True)
    try:
        assert stream.status_code == 200, stream.text
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        reader.start()
        # when a chat is created through the proxy
        response, _web = _send(stack, "POST", f"/api/applications/{tenant.app_token}/chats", host=tenant.host,
                               json_body={"customer_id": "streamed-customer"})  # fmt: skip
        assert response.status_code == 202
        number = response.json()["number"]

        # then its chat.created arrives on the open stream, while the stream is still open (nothing buffered it)
        def created():
            return [frame for frame in frames
                    if frame.get("event") == "chat.created" and frame["data"]["data"].get("number") == number]  # fmt: skip

        [frame] = wait_until(created, timeout=30, what=f"chat.created of chat {number} on the stream")
        assert frame["data"]["data"]["customer_id"] == "streamed-customer"
    finally:
        stream.close()
    # and the stream was served by uvicorn, not by a web
    stream_upstream = wait_until(lambda: stack.proxy_upstream_of(request_id), timeout=10, what="the stream's log line")
    assert stream_upstream == f"127.0.0.1:{stack.stream_port}"


def test_killing_one_web_and_one_worker_mid_traffic_loses_nothing(topology, tenant):
    stack = topology
    try:
        with CreationLoad(stack, tenant, threads=LOAD_THREADS) as load:
            wait_until(lambda: load.accepted() >= 100, timeout=30, what="load to get going")
            # when one web and one worker are SIGKILLed under load
            stack.web_kill(1)
            stack.worker_kill(0)
            accepted_at_kill = load.accepted()
            # then the proxy sends everything to the other web, and the other worker drains it
            wait_until(lambda: load.accepted() >= accepted_at_kill + 100, timeout=30, what="load to go on after the kill")
        wait_until(lambda: drained(stack, tenant), timeout=60, interval=0.2, what="the creations queue to drain")
        # every 202 is a row, each exactly once, numbers contiguous, counts exact
        assert creations_check(stack, tenant, load) == {"chats": [], "messages": [], "counts": [], "duplicates": []}
        # Only requests in flight at the killed web may have failed: the proxy's JSON 502 (no answer came), or an
        # answer cut off (its headers had passed the proxy when the web died). Their outcome is unknown to the
        # client; a request whose connection the dead web refused went on to the other web.
        assert all((status == 502 and json.loads(body) == {"detail": "Bad gateway: the web server did not answer."})
                   or status == 0 for _kind, status, body in load.failures), load.failures  # fmt: skip
        assert len(load.failures) <= LOAD_THREADS, load.failures
    finally:
        # (the next tests get the whole topology back)
        if stack.web_name(1) not in stack.processes:
            stack.web_start(1)
        if stack.processes[stack.worker_name(0)].poll() is not None:
            stack.worker_start(0)


def test_liveness_answers_through_the_proxy_and_on_each_web_with_postgresql_and_redis_stopped(topology):
    stack = topology
    # given PostgreSQL and Redis stopped
    stack.pg_stop(mode="fast")
    stack.redis_stop(graceful=False)
    try:
        for url in [stack.proxy_url, *stack.web_urls, stack.stream_url]:
            for host in (BASE_DOMAIN, f"topology.{BASE_DOMAIN}"):
                # when liveness is asked, then it answers; readiness names what is down
                live = requests.get(f"{url}/health/live", headers={"Host": host}, timeout=5)
                assert (live.status_code, live.json()) == (200, {"status": "ok"}), (url, host, live.text)
        ready = requests.get(f"{stack.proxy_url}/health", headers={"Host": BASE_DOMAIN}, timeout=10)
        assert ready.status_code == 503
        assert re.match(r"error: ", ready.json()["database"]) and re.match(r"error: ", ready.json()["redis"])
    finally:
        stack.redis_start()
        stack.pg_start()
    wait_until(lambda: stack.health()[0] == 200, timeout=30, what="readiness back")
