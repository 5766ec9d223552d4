"""The drain's scheduling: one drain keeps going while records come, and nothing is ever left undrained.

`creations:scheduled` is set while a drain is queued or running; a request that finds it set sends no task.
The running drain unsets it only in the same atomic step as it finds the list empty.
"""

from django_tenants.utils import schema_context

from conversations import creations, services
from conversations.models import Application, Chat
from core.redis import get_redis


def _chats_url(application: Application) -> str:
    return f"/api/applications/{application.token}/chats"


def _scheduled(tenant) -> bool:
    with schema_context(tenant.schema_name):
        return bool(get_redis().exists(creations.scheduled_key()))


def _chat_numbers(tenant) -> list[int]:
    with schema_context(tenant.schema_name):
        return sorted(Chat.objects.values_list("number", flat=True))


def test_a_request_during_a_drain_sends_no_task_and_the_running_drain_persists_it(
    tenant_a, application_a, client_a, drain, monkeypatch
):
    # given one queued chat (its request scheduled the drain), and a second chat created while that drain
    # commits its first batch
    client_a.post(_chats_url(application_a), {})
    persist_batch = services._persist_batch
    batches = []

    def batch_then_a_request(records):
        batches.append([record["number"] for record in records])
        added = persist_batch(records)
        if len(batches) == 1:
            assert client_a.post(_chats_url(application_a), {}).status_code == 202
        return added

    monkeypatch.setattr(services, "_persist_batch", batch_then_a_request)

    # when the drain runs
    handled = drain(tenant_a)

    # then that request sent no task (the drain was running), the same drain persisted its chat, and the
    # drain unset `scheduled` when it found the list empty
    assert drain.scheduled == 1
    assert handled == 2
    assert batches == [[1], [2]]
    assert _chat_numbers(tenant_a) == [1, 2]
    assert not _scheduled(tenant_a)

    # and the next request, with no drain running, schedules one again
    client_a.post(_chats_url(application_a), {})
    assert drain.scheduled == 2
    assert _scheduled(tenant_a)


def test_a_record_queued_as_the_drain_finds_the_list_empty_is_not_stranded(
    tenant_a, application_a, client_a, drain, monkeypatch
):
    # given a drain that has just read an empty list, and a chat queued before it unsets `scheduled`
    client_a.post(_chats_url(application_a), {})
    finish_if_empty = creations.finish_if_empty
    outcomes = []

    def a_request_then_finish(token):
        if not outcomes:
            client_a.post(_chats_url(application_a), {})
        outcomes.append(finish_if_empty(token))
        return outcomes[-1]

    monkeypatch.setattr(creations, "finish_if_empty", a_request_then_finish)

    # when the drain goes on
    handled = drain(tenant_a)

    # then the emptiness check saw the record (the request found `scheduled` set and sent nothing), and the
    # drain persisted it before finishing
    assert outcomes == [creations.RECORDS_WAITING, creations.FINISHED]
    assert drain.scheduled == 1
    assert handled == 2
    assert _chat_numbers(tenant_a) == [1, 2]
    assert not _scheduled(tenant_a)


def test_a_drain_lingers_once_for_a_batch_to_fill(tenant_a, application_a, client_a, drain, monkeypatch):
    # given one queued chat, and another arriving while the drain waits for its batch to fill
    client_a.post(_chats_url(application_a), {})
    waits = []

    def a_request_arrives(seconds):
        waits.append(seconds)
        if len(waits) == 1:
            client_a.post(_chats_url(application_a), {})

    monkeypatch.setattr(services.time, "sleep", a_request_arrives)
    persist_batch = services._persist_batch
    batches = []
    monkeypatch.setattr(services, "_persist_batch", lambda records: batches.append(len(records)) or persist_batch(records))

    # when drained with a linger
    with schema_context(tenant_a.schema_name):
        handled = services.creations_persist(batch_size=10, linger_seconds=0.05)

    # then both chats went in one batch; it waited once for that batch and once more before finishing
    assert handled == 2
    assert batches == [2]
    assert waits == [0.05, 0.05]
    assert _chat_numbers(tenant_a) == [1, 2]
    assert not _scheduled(tenant_a)


def test_a_drain_past_its_time_hands_over_to_a_new_task(tenant_a, application_a, client_a, drain):
    # given three queued chats
    for _ in range(3):
        client_a.post(_chats_url(application_a), {})
    assert drain.scheduled == 1

    # when a drain with no time left persists one batch of two
    with schema_context(tenant_a.schema_name):
        handled = services.creations_persist(batch_size=2, max_seconds=0)

    # then it sent the next drain and left `scheduled` set for it, and released its lock
    assert handled == 2
    assert drain.scheduled == 2
    assert _scheduled(tenant_a)
    with schema_context(tenant_a.schema_name):
        assert creations.pending_count() == 1
        assert not get_redis().exists(creations.lock_key())

    # and that drain persists the rest
    assert drain(tenant_a) == 1
    assert _chat_numbers(tenant_a) == [1, 2, 3]
    assert not _scheduled(tenant_a)


def test_a_drain_that_finds_the_lock_taken_leaves_its_records_to_the_holder(tenant_a, application_a, client_a, drain):
    # given a queued chat and the drain lock held (another drain's)
    client_a.post(_chats_url(application_a), {})
    with schema_context(tenant_a.schema_name):
        get_redis().set(creations.lock_key(), "another-drain")

    # when a drain runs, it persists nothing and leaves `scheduled` set: the holder re-checks the list
    assert drain(tenant_a) == 0
    assert _scheduled(tenant_a)
    assert _chat_numbers(tenant_a) == []


def test_the_recount_sends_a_drain_for_records_queued_while_it_held_the_lock(tenant_a, application_a, client_a, drain):
    # given a queued chat: the recount holds the drain lock, so a drain finding it taken would rely on it
    client_a.post(_chats_url(application_a), {})
    assert drain.scheduled == 1

    # when the recount runs
    with schema_context(tenant_a.schema_name):
        services.counts_reconcile()

    # then, the list not empty after it released the lock, it sent a drain
    assert drain.scheduled == 2
    drain(tenant_a)
    assert _chat_numbers(tenant_a) == [1]


def test_a_recount_ending_on_an_empty_list_leaves_no_record_behind_it(tenant_a, application_a, client_a, drain):
    # given a recount holding the drain lock while a drain, finding it taken, returned with `scheduled` still
    # set (it trusts the holder to look again), and the list empty by the time the recount ends (the drain
    # before it persisted everything)
    client_a.post(_chats_url(application_a), {})
    drain(tenant_a)
    assert drain.scheduled == 1 and not _scheduled(tenant_a)
    with schema_context(tenant_a.schema_name):
        get_redis().set(creations.scheduled_key(), 1, ex=60)  # set by that drain's request, left by the drain
        services.counts_reconcile()

    # when the next chat is created
    client_a.post(_chats_url(application_a), {})

    # then its request sends a drain: the recount's way out unset `scheduled` with the list empty (releasing
    # the lock alone left it set, so this request sent nothing and the record waited for the sweep)
    assert drain.scheduled == 2
    drain(tenant_a)
    assert _chat_numbers(tenant_a) == [1, 2]


def _redis_calls() -> dict[str, int]:
    return {name: stats["calls"] for name, stats in get_redis().info("commandstats").items()}


def test_a_drain_of_one_record_costs_three_redis_scripts_two_reads_and_one_marks_statement(
    tenant_a, application_a, drain
):
    # At a few creates per second per tenant most batches hold one record, so what a batch costs besides
    # its rows is paid per record: here it is counted, not timed.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with schema_context(tenant_a.schema_name):
        services.chat_create(application=application_a)
        services.creations_persist(batch_size=100)  # Redis has loaded every script the drain sends
        services.chat_create(application=application_a)
        before = _redis_calls()
        with CaptureQueriesContext(connection) as queries:
            # with a linger, as in production: a short list is read once, after the wait
            assert services.creations_persist(batch_size=100, linger_seconds=0.02) == 1
        after = _redis_calls()
    # Redis: take the lock and count (a script), read the batch, trim it and renew (a script), read again
    # (empty), find the list empty and release the lock (a script). Scripts run their own commands inside.
    assert after["cmdstat_evalsha"] - before["cmdstat_evalsha"] == 3
    assert after["cmdstat_lrange"] - before["cmdstat_lrange"] == 2
    # PostgreSQL: the new chat's assignment and recount marks in one statement
    marks = [query["sql"] for query in queries.captured_queries if "tenants_tenantwork" in query["sql"]]
    assert len(marks) == 1
    assert _chat_numbers(tenant_a) == [1, 2]
    assert not _scheduled(tenant_a)


def test_a_big_batch_of_chats_and_messages_is_persisted_in_one_pipelined_transaction(tenant_a, application_a, drain):
    # A thousand chats and a message for each of a thousand others: the batch's statements are pipelined
    # (core.prepared.pipelined), and PostgreSQL answered the chats' count UPDATE while its INSERT of the
    # messages was still arriving; the cursor then read that answer as the INSERT's ("the last operation
    # didn't produce records"), and the drain failed the same way at each retry.
    from conversations.models import Message

    with schema_context(tenant_a.schema_name):
        for n in range(1000):
            services.chat_create(application=application_a, customer_id=f"first-{n}")
        services.creations_persist(batch_size=5000)
        for n in range(1000):
            services.chat_create(application=application_a, customer_id=f"second-{n}")
            services.message_create(application=application_a, chat_number=n + 1, body="hello " * 50)

        assert services.creations_persist(batch_size=5000) == 2000

        assert Chat.objects.count() == 2000
        assert Message.objects.count() == 1000
        assert sorted(Chat.objects.filter(number__lte=1000).values_list("messages_count", flat=True)) == [1] * 1000
        application_a.refresh_from_db()
        assert application_a.chats_count == 2000


def test_a_drain_turn_waits_for_postgresql_a_few_times_not_once_per_statement(tenant_a, application_a, drain):
    # Under load each round trip costs two wake-ups of processes waiting for a core (issue 18): the batch's
    # statements travel pipelined, so the client waits only where it reads rows and for the commit. Counted,
    # not timed (core.tests.support.postgres_round_trips).
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from core.tests.support import postgres_round_trips

    with schema_context(tenant_a.schema_name):
        services.chat_create(application=application_a)
        services.creations_persist(batch_size=100)  # every statement prepared on this connection
        services.chat_create(application=application_a)
        services.message_create(application=application_a, chat_number=1, body="hi")
        services.creations_persist(batch_size=100)
        services.chat_create(application=application_a)
        services.message_create(application=application_a, chat_number=2, body="hi")
        records = creations.pending_peek(100)
        with CaptureQueriesContext(connection) as queries, postgres_round_trips() as trips:
            services._persist_batch(records)
    # 12 statements: waits for the test's savepoint, the two inserts' ids, the routing hook's arrivals, the rest
    # at the block's end, and the commit (the savepoint's release here; in a worker the BEGIN travels with the
    # first statements): 5, and a read whose answer arrives in two pieces waits twice; 20 waits before they
    # were pipelined
    assert len(queries.captured_queries) >= 12
    assert trips.count <= 7
