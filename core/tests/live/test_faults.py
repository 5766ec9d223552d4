"""Faults under load: Redis killed, RabbitMQ killed, PostgreSQL restarted, a worker SIGKILLed mid drain batch.

Each test runs load generators against the LiveStack (live_stack.py: its own PostgreSQL, Redis, RabbitMQ,
gunicorn, two workers and beat) and a /health poller, breaks one dependency, brings it back and then checks:

- every creation answered 2xx exists exactly once in PostgreSQL once the queue has drained, nothing was
  persisted twice, numbers are contiguous, counts are exact (live_stack.creations_check);
- every request that failed got a clean 503 JSON naming the dependency (never a 2xx that is then lost);
- /health answered 503 naming the dependency while it was down;
- web and workers recover by themselves (nobody restarts them) within 10 s of the dependency being back:
  /health is 200 and a creation is accepted, and persisted.
"""

import re
import time

import psycopg
import pytest

from live_stack import CreationLoad, HealthPoller, creations_check, drained, wait_until

pytestmark = [pytest.mark.fault]

RECOVERY_SECONDS = 10


def _accepted_chat_persisted(stack, tenant, load, *, since: float) -> bool:
    chats = load.accepted_chats_since(since)
    if not chats:
        return False
    customer_id, number, _at = chats[0]
    rows = stack.sql(f'SELECT number FROM "{tenant.slug}".conversations_chat WHERE application_id = %s AND customer_id = %s',
                     [tenant.app_id, customer_id])  # fmt: skip
    return rows == [(number,)]


def _wait_recovered(stack, tenant, load, *, back_at: float) -> None:
    """Within RECOVERY_SECONDS of `back_at`: /health 200, and a creation accepted after that (the load's)."""

    def recovered():
        status, _body = stack.health()
        return status == 200 and load.accepted_chats_since(time.monotonic() - 0.5)

    try:
        wait_until(recovered, timeout=RECOVERY_SECONDS - (time.monotonic() - back_at), what="recovery")
    except TimeoutError:
        pytest.fail(f"not recovered {RECOVERY_SECONDS}s after the dependency came back; last failures: {load.failures[-5:]}")


def _assert_clean_failures(load: CreationLoad, dependency: str) -> None:
    unclean = [failure for failure in load.failures if failure[1] != 503 or dependency not in failure[2]]
    assert unclean == [], f"{len(unclean)} requests failed otherwise than 503 naming {dependency}: {unclean[:5]}"


def _assert_nothing_restarted(stack) -> None:
    # Web, workers and beat rode out the outage in the same processes: nobody restarted them.
    exited = {name: process.returncode for name, process in stack.processes.items() if process.poll() is not None}
    assert exited == {}, {name: stack.log(name)[-3000:] for name in exited}


def _assert_everything_persisted_once(stack, tenant, load) -> None:
    try:
        wait_until(lambda: drained(stack, tenant), timeout=60, what="the creations queue to drain", interval=0.2)
    except TimeoutError:
        pytest.fail(f"queue not drained: {stack.redis().llen(f'sociomile:{tenant.slug}:creations')} creations wait")
    assert creations_check(stack, tenant, load) == {"chats": [], "messages": [], "counts": [], "duplicates": []}


def _outage_reported(poller: HealthPoller, *, start: float, end: float, dependency: str) -> list:
    return [answer for answer in poller.between(start, end)
            if answer[1] == 503 and isinstance(answer[2], dict) and answer[2].get(dependency, "ok") != "ok"]  # fmt: skip


@pytest.fixture(scope="module")
def tenant(live_stack):
    return live_stack.bootstrap(slug="faults", agents=0)


def _drain_lock_take(client, tenant, *, seconds: int) -> None:
    """Takes the tenant's drain lock for `seconds`, as a slow drain would hold it. Under steady load one drain
    keeps the lock and hands it to a new task every CREATIONS_DRAIN_MAX_SECONDS: this takes it in the moment
    between the two, so it polls often and for longer than one hand-over."""
    lock = f"sociomile:{tenant.slug}:creations:lock"
    wait_until(lambda: client.set(lock, "test-holds-it", nx=True, ex=seconds), timeout=30, interval=0.002,
               what="the drain lock")  # fmt: skip


def test_redis_killed_under_load_loses_nothing_and_recovers(live_stack, tenant):
    stack = live_stack
    with HealthPoller(stack) as poller, CreationLoad(stack, tenant, threads=6) as load:
        wait_until(lambda: load.accepted() >= 200, timeout=30, what="load to get going")
        # given accepted creations queued in Redis and not in PostgreSQL yet: the test holds the drain lock
        # for a few seconds, as a slow drain would (it expires by itself after the restart)
        client = stack.redis()
        _drain_lock_take(client, tenant, seconds=5)
        wait_until(lambda: client.llen(f"sociomile:{tenant.slug}:creations") >= 50, timeout=30, what="a backlog")
        # when Redis is SIGKILLed
        down_at = time.monotonic()
        stack.redis_stop(graceful=False)
        wait_until(lambda: _outage_reported(poller, start=down_at, end=time.monotonic(), dependency="redis"),
                   timeout=10, what="/health to report redis down")  # fmt: skip
        time.sleep(1)
        accepted_during_outage = load.accepted()
        stack.redis_start()
        back_at = time.monotonic()
        # then web and workers reconnect by themselves
        _wait_recovered(stack, tenant, load, back_at=back_at)
        wait_until(lambda: _accepted_chat_persisted(stack, tenant, load, since=back_at), timeout=RECOVERY_SECONDS,
                   what="a chat accepted after the restart to be persisted")  # fmt: skip
    assert load.accepted() > accepted_during_outage
    _assert_nothing_restarted(stack)
    assert _outage_reported(poller, start=down_at, end=back_at, dependency="redis")
    assert load.failures, "the outage should have refused some requests"
    _assert_clean_failures(load, "redis")
    _assert_everything_persisted_once(stack, tenant, load)


def test_rabbitmq_killed_under_load_loses_nothing_and_recovers(live_stack, tenant):
    stack = live_stack
    with CreationLoad(stack, tenant, threads=6) as load:
        wait_until(lambda: load.accepted() >= 200, timeout=30, what="load to get going")
        # given creations being accepted and drained through the broker
        # when RabbitMQ is SIGKILLed for a few seconds
        down_at = time.monotonic()
        stack.rabbitmq_stop(graceful=False)
        accepted_at_kill = load.accepted()
        time.sleep(3)
        # then creations are still accepted: they wait in Redis, and a drain that could not be sent is logged
        # and left to the sweep instead of failing a request whose creation was already stored
        assert load.accepted() > accepted_at_kill
        stack.rabbitmq_start()
        back_at = time.monotonic()
        # and web, workers and beat reconnect by themselves; a chat accepted now is persisted
        _wait_recovered(stack, tenant, load, back_at=back_at)
        wait_until(lambda: _accepted_chat_persisted(stack, tenant, load, since=back_at), timeout=30,
                   what="a chat accepted after the restart to be persisted")  # fmt: skip
    assert time.monotonic() - down_at > 3
    _assert_nothing_restarted(stack)
    assert load.failures == [], load.failures[:5]
    _assert_everything_persisted_once(stack, tenant, load)


def test_postgres_restarted_under_load_loses_nothing_and_recovers(live_stack, tenant):
    stack = live_stack
    with (
        HealthPoller(stack) as poller,
        HealthPoller(stack, host=tenant.host) as tenant_poller,
        CreationLoad(stack, tenant, threads=6) as load,
    ):
        wait_until(lambda: load.accepted() >= 200, timeout=30, what="load to get going")
        down_at = time.monotonic()
        stack.pg_stop(mode="fast")
        wait_until(lambda: _outage_reported(poller, start=down_at, end=time.monotonic(), dependency="database"),
                   timeout=10, what="/health to report the database down")  # fmt: skip
        time.sleep(2)
        stack.pg_start()
        back_at = time.monotonic()
        _wait_recovered(stack, tenant, load, back_at=back_at)
        wait_until(lambda: _accepted_chat_persisted(stack, tenant, load, since=back_at), timeout=RECOVERY_SECONDS,
                   what="a chat accepted after the restart to be persisted")  # fmt: skip
    _assert_nothing_restarted(stack)
    assert _outage_reported(poller, start=down_at, end=back_at, dependency="database")
    # A tenant host's health names the database too, though its host could not even be looked up.
    assert _outage_reported(tenant_poller, start=down_at, end=back_at, dependency="database")
    assert load.failures, "the outage should have refused some requests"
    _assert_clean_failures(load, "database")
    _assert_everything_persisted_once(stack, tenant, load)


# The drain's statement that inserts a batch's chats and adds them to their application's chats_count: its UPDATE
# runs on the rows its INSERT returned (so the transaction has written rows), and it needs the application's row.
# (after the schema's tag that prepared statements carry: core.prepared)
_ADD_CHATS_COUNT = r"^(/\* \w+ \*/)?\s*WITH inserted AS \(\s*INSERT INTO conversations_chat "


def _drain_blocked_mid_batch(conn) -> str | None:
    """The worker whose drain has written rows in its batch transaction and now waits for the application row
    the test holds locked, if any: it cannot commit, nor its task finish, until the test lets go."""
    rows = conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'worker%%' "
        "AND backend_xid IS NOT NULL AND wait_event_type = 'Lock' AND query ~ %s",
        [_ADD_CHATS_COUNT],
    ).fetchall()
    return rows[0][0] if rows else None


_TASK_EVENT = re.compile(r"creations_persist_task\[([0-9a-f-]+)\] (received|succeeded|retry|reject|raised)")


def _drain_tasks_running(log: str) -> set[str]:
    """Ids of the drain tasks a worker log shows received and not yet done (the last event per id wins:
    a retried task is received again under the same id)."""
    last: dict[str, str] = {}
    for task_id, event in _TASK_EVENT.findall(log):
        last[task_id] = event
    return {task_id for task_id, event in last.items() if event == "received"}


def _drain_tasks_received(log: str) -> set[str]:
    return {task_id for task_id, event in _TASK_EVENT.findall(log) if event == "received"}


def test_worker_killed_mid_batch_is_redelivered_not_duplicated(live_stack, tenant):
    stack = live_stack
    client = stack.redis()
    lock = f"sociomile:{tenant.slug}:creations:lock"
    with CreationLoad(stack, tenant, threads=8) as load:
        wait_until(lambda: load.accepted() >= 100, timeout=30, what="load to get going")
        # given a backlog of thousands of creations: the test holds the drain lock for a while, as a slow
        # drain would, so the next drain takes one big batch
        _drain_lock_take(client, tenant, seconds=90)
        wait_until(lambda: client.llen(f"sociomile:{tenant.slug}:creations") >= 600, timeout=80, what="a backlog")
        # when the worker running that batch is SIGKILLed inside its transaction. The test holds the
        # application's row (FOR NO KEY UPDATE: the batch's chat inserts, whose foreign key checks only share
        # the row, go through), which the batch updates after inserting its chats, so the batch is still open
        # (and its task unfinished) when the kill lands, however slowly this process gets to it: caught in a
        # short window instead, the batch sometimes committed and its task ended first (a 0.5 s drain hands
        # over between batches), and the kill hit a worker with no drain in flight.
        with (
            psycopg.connect(stack.database_url, autocommit=True) as conn,
            psycopg.connect(stack.database_url) as holder,
        ):
            holder.execute(f'SELECT 1 FROM "{tenant.slug}".conversations_application WHERE id = %s '
                           "FOR NO KEY UPDATE", [tenant.app_id])  # fmt: skip
            client.delete(lock)
            victim = wait_until(lambda: _drain_blocked_mid_batch(conn), timeout=30, interval=0.01,
                                what="a drain mid-batch")  # fmt: skip
            index = int(victim.removeprefix("worker"))
            survivor = f"worker{1 - index}"
            # read before the kill: RabbitMQ requeues the victim's messages the moment its connection drops, so
            # the survivor may receive them before this line could run after the kill
            survivor_offset = len(stack.log(survivor))
            stack.worker_kill(index)
            holder.rollback()
        killed_at = time.monotonic()
        # then the surviving worker takes over (the lease expires), new creations are persisted
        wait_until(lambda: _accepted_chat_persisted(stack, tenant, load, since=killed_at), timeout=20,
                   what="a chat accepted after the kill to be persisted")  # fmt: skip
    # the drain tasks that died with the worker (received, never finished) are redelivered to the survivor
    # (acks_late: RabbitMQ requeues them when the dead worker's connection drops)
    # (since that worker's last start, not since this test's: a drain an earlier test left retrying, received
    # before this test began, can be the one holding the batch when the kill lands; CI saw exactly that)
    # and since its consumer last connected to the broker: a drain it had received before an earlier test's
    # broker outage cut that connection was requeued by RabbitMQ then (and run by either worker), not by this kill
    victim_log = stack.log(f"worker{index}")
    since = max(victim_log.rfind(" ready."), victim_log.rfind("celery.worker.consumer.connection: Connected to"))
    in_flight = _drain_tasks_running(victim_log[since + 1:])
    assert in_flight
    wait_until(lambda: in_flight <= _drain_tasks_received(stack.log(survivor)[survivor_offset:]), timeout=30,
               interval=0.5, what="the killed drain's task to be redelivered")  # fmt: skip
    _assert_everything_persisted_once(stack, tenant, load)
    assert [failure for failure in load.failures] == []
    # the stack stays usable for the next tests
    stack.worker_start(index)
