"""The send pipeline (core.transport.http_send_pipeline) on its own, without HTTP or a database: what it
promises the delivery engine and the scheduler about its threads."""

import random
import threading
import time
import types
from collections import Counter

from core.transport import http_send_pipeline


def _pipeline(*, batches: list[list[tuple[str, int]]], send, concurrency: int, key_concurrency: int) -> list:
    """Runs the pipeline over `batches` (one per claim) of (key, number) items; returns what was recorded."""
    recorded = []
    http_send_pipeline(
        claim=lambda held: batches.pop(0) if batches else [],
        key=lambda item: item[0],
        send=send,
        record=recorded.extend,
        renew=lambda: None,
        renew_every=30,
        release=lambda untried: None,
        concurrency=concurrency,
        key_concurrency=key_concurrency,
        thread_name_prefix="pipeline-test",
    )
    return recorded


def test_every_item_is_sent_once_in_claim_order_per_key_and_within_each_keys_limit():
    # given three keys, claims of uneven sizes, and sends of random lengths on more threads than one key may use
    batches = [[(key, number) for number in range(start, start + size) for key in "abc"] for start, size in [(0, 7), (7, 40), (47, 13)]]
    lock = threading.Lock()
    in_flight, most_in_flight, started = Counter(), Counter(), []

    def send(item):
        with lock:
            in_flight[item[0]] += 1
            in_flight["all"] += 1
            most_in_flight.update({name: 0 for name in in_flight})
            for name, count in in_flight.items():
                most_in_flight[name] = max(most_in_flight[name], count)
            started.append(item)
        time.sleep(random.uniform(0, 0.003))
        with lock:
            in_flight[item[0]] -= 1
            in_flight["all"] -= 1
        return f"answer {item[0]}{item[1]}"

    # when
    recorded = _pipeline(batches=batches, send=send, concurrency=5, key_concurrency=2)

    # then every item was sent and recorded once with its own answer, never more than 2 of a key or 5 in all at
    # once, and each key's items started in the order they were claimed
    expected = {(key, number) for number in range(60) for key in "abc"}
    assert len(recorded) == 180
    assert {item for item, _ in recorded} == expected
    assert all(answer == f"answer {item[0]}{item[1]}" for item, answer in recorded)
    assert sorted(started) == sorted(expected)
    assert most_in_flight["a"] == most_in_flight["b"] == most_in_flight["c"] == 2
    assert most_in_flight["all"] == 5
    for key in "abc":
        assert [number for item_key, number in started if item_key == key] == list(range(60))


def test_an_answer_wakes_no_idle_sending_thread(monkeypatch):
    """A thread that finds nothing to start sleeps until a claim brings items: each answer's free slot is
    filled by the thread that got the answer. Waking every thread at each answer (most of them to find their
    key's slots taken) cost a delivery run a fifth of the GIL time its sending threads had."""
    wakeups = Counter()

    class CountingCondition(threading.Condition):
        def wait(self, timeout=None):
            result = super().wait(timeout)
            wakeups[threading.current_thread().name] += 1
            return result

    import core.transport

    monkeypatch.setattr(core.transport, "threading", types.SimpleNamespace(Condition=CountingCondition, Thread=threading.Thread))
    # given one key that may use 2 of 8 threads, and 200 items in one claim
    batches = [[("endpoint", number) for number in range(200)]]

    # when
    recorded = _pipeline(batches=batches, send=lambda item: time.sleep(0.0005), concurrency=8, key_concurrency=2)

    # then the 6 threads that never had a slot slept through the 200 answers: woken by the claim at most and by
    # the end (not once per answer), and the 2 that sent never waited between answers
    assert len(recorded) == 200
    assert sum(wakeups.values()) <= 8 * 2
