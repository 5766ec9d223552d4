import re
import select
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from core.redis import get_redis, redis_delete_if_equal, redis_script, redis_script_source, tenant_key

# Appends ARGV[1] to a list and returns its length: a script that must not run twice for one call.
_APPEND = "return redis.call('RPUSH', KEYS[1], ARGV[1])"


@pytest.fixture
def list_key():
    key = tenant_key("redis-tests", "script", time.time_ns())
    yield key
    get_redis().delete(key)


def test_a_script_runs_again_after_redis_forgot_it(list_key):
    # given the script has run once, then Redis dropped every script (a restart does the same)
    script = redis_script(_APPEND)
    assert script(keys=[list_key], args=["first"]) == 1
    get_redis().script_flush()

    # when it is called again
    length = script(keys=[list_key], args=["second"])

    # then it was loaded and ran exactly once more
    assert length == 2
    assert get_redis().lrange(list_key, 0, -1) == [b"first", b"second"]


class _ReplyDroppingProxy:
    """A TCP proxy to Redis that relays everything, except that after it forwards the first command containing
    `marker` (EVALSHA by default) it closes the client's connection instead of relaying Redis's reply: a command
    that ran, whose reply was lost on the way back."""

    def __init__(self, host: str, port: int, marker: bytes = b"EVALSHA"):
        self.target = (host, port)
        self.marker = marker
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket):
        with client, socket.create_connection(self.target) as server:
            drop_next_reply = False
            while True:
                readable, _, _ = select.select([client, server], [], [])
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    if self.marker in data and not self.dropped.is_set():
                        drop_next_reply = True
                    server.sendall(data)
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    if drop_next_reply:
                        self.dropped.set()
                        return  # closes the client's connection with the reply unsent
                    client.sendall(data)

    def close(self):
        self.listener.close()


def test_a_script_whose_connection_drops_before_the_reply_is_not_sent_again(list_key, settings):
    # given a connection to Redis that breaks after the script was sent and ran, before its reply arrives
    url = urlsplit(settings.REDIS_URL)
    proxy = _ReplyDroppingProxy(url.hostname, url.port)
    settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}{url.path}"
    get_redis.cache_clear()
    try:
        # when the script is called
        with pytest.raises(redis.ConnectionError):
            redis_script(_APPEND)(keys=[list_key], args=["once"])
        # then it ran once (a client that retried on a ConnectionError would have run it again)
        assert proxy.dropped.is_set()
        assert get_redis().llen(list_key) == 1
        # and the next call opens a new connection and runs normally
        assert redis_script(_APPEND)(keys=[list_key], args=["next"]) == 2
    finally:
        get_redis().delete(list_key)
        proxy.close()
        get_redis.cache_clear()


@pytest.mark.parametrize(
    ("marker", "command"),
    [
        (b"RPUSH", lambda client, key: client.rpush(key, "once")),
        (b"EVAL", lambda client, key: client.eval(_APPEND, 1, key, "once")),
        (b"RPUSH", lambda client, key: client.pipeline(transaction=False).rpush(key, "once").expire(key, 60).execute()),
    ],
    ids=["command", "eval", "pipeline"],
)
def test_the_pooled_client_never_sends_a_command_again_whose_reply_was_lost(list_key, settings, marker, command):
    # given the process's pooled client on a connection that breaks after a command ran, before its reply arrives
    url = urlsplit(settings.REDIS_URL)
    proxy = _ReplyDroppingProxy(url.hostname, url.port, marker=marker)
    settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}{url.path}"
    get_redis.cache_clear()
    try:
        # when a non-idempotent command is sent through it
        with pytest.raises(redis.ConnectionError):
            command(get_redis(), list_key)
        # then it ran once: a client made with redis-py's Redis(...) defaults resends it on a new connection (up
        # to 10 times), and an RPUSH, an INCR or a slot-taking script sent again does its work again
        assert proxy.dropped.is_set()
        assert get_redis().llen(list_key) == 1
        # and the next command opens a new connection and works
        assert get_redis().rpush(list_key, "next") == 2
    finally:
        get_redis().delete(list_key)
        proxy.close()
        get_redis.cache_clear()


# Scripts run only through core.redis's runner (redis_script_load, or redis_script): never the pooled
# client's eval, whose retries and pooling the runner exists to avoid.
_EVAL_CALL = re.compile(r"\.(eval|evalsha|register_script|script_load)\(")
_EVAL_ALLOWED = {"core/redis.py"}


def test_no_script_is_run_outside_the_no_retry_loader():
    root = Path(__file__).resolve().parents[2]
    found = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.glob("*/**/*.py"))
        if "tests" not in path.parts and path.relative_to(root).parts[0] not in (".venv", "bench")
        and str(path.relative_to(root)) not in _EVAL_ALLOWED
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _EVAL_CALL.search(line)
    ]
    assert found == []


def test_threads_running_scripts_at_once_each_get_their_own_replies(list_key):
    # given eight threads, each running the script 200 times at once
    lengths: list[int] = []
    errors = []

    def append(thread: int):
        try:
            for index in range(200):
                lengths.append(redis_script(_APPEND)(keys=[list_key], args=[f"{thread}:{index}"]))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=append, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then every call ran once and got its own reply (the list's length just after its push): a reply read by
    # the wrong thread would show as a length seen twice
    assert errors == []
    assert sorted(lengths) == list(range(1, 1601))
    items = [item.decode() for item in get_redis().lrange(list_key, 0, -1)]
    for thread in range(8):
        assert [item for item in items if item.startswith(f"{thread}:")] == [f"{thread}:{index}" for index in range(200)]


def test_a_window_count_expires_with_its_window_and_an_uncount_never_makes_a_key():
    from core.redis import window_count, window_uncount

    redis = get_redis()
    key = tenant_key("redis-test", "window")
    redis.delete(key)

    assert window_count(key, window_seconds=60) == (1, 60)
    count, seconds_left = window_count(key, window_seconds=60)
    assert count == 2 and 59 <= seconds_left <= 60
    window_uncount(key)
    assert int(redis.get(key)) == 1 and 0 < redis.ttl(key) <= 60

    redis.delete(key)
    window_uncount(key)  # its window is over: nothing to take back, and no key left without an expiry
    assert redis.exists(key) == 0


_ROOT = Path(__file__).resolve().parents[2]
_LUA_FILES = sorted(path for path in _ROOT.glob("*/scripts/*.lua"))


def test_every_script_file_compiles_in_redis_with_its_snippets():
    # given every <app>/scripts/*.lua, its `--! include` lines expanded
    assert len(_LUA_FILES) >= 14
    for path in _LUA_FILES:
        source = redis_script_source(path)
        # then no include is left, and Redis accepts it (SCRIPT LOAD compiles without running)
        assert "--! include" not in source, path
        assert get_redis().script_load(source), path


def test_shared_snippets_are_written_once():
    # The server clock in ms (core/scripts/lib/now_ms.lua) and compare-and-delete (core/scripts/delete_if_equal.lua)
    # have one text each; a script needing them includes or calls them instead of carrying a copy.
    clock_in_ms = re.compile(r"\*\s*1000\s*\+\s*math\.floor")
    compare_and_delete = re.compile(r"GET', KEYS\[1\]\) == ARGV\[1\] then return redis\.call\('DEL'")
    sources = {path: path.read_text() for path in [*_LUA_FILES, *_ROOT.glob("*/scripts/lib/*.lua")]}
    sources |= {path: path.read_text() for path in _ROOT.glob("*/**/*.py") if ".venv" not in path.parts}
    assert [str(path.relative_to(_ROOT)) for path, text in sources.items() if clock_in_ms.search(text)] == ["core/scripts/lib/now_ms.lua"]
    assert [str(path.relative_to(_ROOT)) for path, text in sources.items() if compare_and_delete.search(text)] == ["core/scripts/delete_if_equal.lua"]


# scheduler/services.py keeps its wave-caching script inline until its package split lands (issue 21, item 2).
_INLINE_LUA_ALLOWED: set[str] = set()


def test_no_lua_is_written_inline_in_python():
    found = [
        str(path.relative_to(_ROOT))
        for path in sorted(_ROOT.glob("*/**/*.py"))
        if "tests" not in path.parts and path.relative_to(_ROOT).parts[0] not in (".venv", "bench")
        and str(path.relative_to(_ROOT)) not in _INLINE_LUA_ALLOWED
        and "redis.call(" in path.read_text()
    ]
    assert found == []


def test_the_now_ms_snippet_is_the_servers_clock_in_ms():
    # given a script that includes the snippet
    source = redis_script_source(_ROOT / "tenants" / "scripts" / "slots_in_use.lua").replace(
        "return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms(), '+inf')", "return now_ms()"
    )
    seconds, microseconds = get_redis().time()
    # then it returns Redis' TIME in ms
    assert abs(redis_script(source)() - (seconds * 1000 + microseconds // 1000)) < 5000


def test_delete_if_equal_deletes_only_the_callers_value(list_key):
    # given a key another process rewrote since this caller set it
    get_redis().set(list_key, "theirs")
    # when the caller deletes "its" value, nothing is deleted; with the value held, it is
    assert redis_delete_if_equal(list_key, "mine") is False
    assert get_redis().get(list_key) == b"theirs"
    assert redis_delete_if_equal(list_key, "theirs") is True
    assert get_redis().exists(list_key) == 0


def test_many_runs_each_call_once_in_order_even_after_redis_forgot_the_script(list_key):
    # given the script was known, then Redis dropped every script
    script = redis_script(_APPEND)
    assert script(keys=[list_key], args=["first"]) == 1
    get_redis().script_flush()

    # when three calls go in one batch
    lengths = script.many([([list_key], ["a"]), ([list_key], ["b"]), ([list_key], ["c"])])

    # then each ran once, in order (NOSCRIPT ran nothing, so they were sent again after the load)
    assert lengths == [2, 3, 4]
    assert get_redis().lrange(list_key, 0, -1) == [b"first", b"a", b"b", b"c"]
    # and a batch on a known script runs each call once too
    assert script.many([([list_key], ["d"])]) == [5]
