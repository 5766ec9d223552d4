"""The HTTP delivery transport shared by every sender of tenant-chosen URLs (the outbound scheduler, the
event webhooks): one keep-alive pool per run, fixed timeouts, no redirects, no retries below the caller's,
the SSRF guard before each request and at connect time, errors classified once, and the parallel
send-and-collect loop that records answers in batches while leases are renewed.

What a 2xx body means (a provider's `messageId`, nothing at all) is the caller's business: this module
says only whether the request was answered, and if not, whether a later attempt may succeed.
"""

import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import requests.utils
import urllib3
from django.conf import settings

from core.outbound_urls import (
    OutboundAddressRefused,
    OutboundUrlRefused,
    OutboundUrlUnresolved,
    PublicAddressHTTPConnection,
    PublicAddressHTTPSConnection,
    outbound_url_check,
)


@dataclass(frozen=True)
class HttpTarget:
    """Where one run's requests go: a keep-alive connection pool to the host (or to the proxy the
    environment names for it), and what goes on the request line."""

    manager: urllib3.PoolManager  # owns the pool; cleared at the end of the run
    pool: urllib3.HTTPConnectionPool
    url: str
    request_target: str  # the path and query; the absolute URL through a plain-HTTP proxy
    headers: dict[str, str]  # those of every request, without the per-request ones


def http_target(*, concurrency: int, url: str, user_agent: str, timeout_seconds: float | None = None) -> HttpTarget:
    """One pool of up to `concurrency` keep-alive connections for a run (one per sending thread).

    urllib3 directly, not requests (built on it): a requests Session costs about as much CPU per request
    again (environment and cookie merging, hooks, header and URL preparation) as the HTTP itself, and the
    sending threads share one GIL with the run. What requests did for us is kept: proxies from the
    environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY: read once per run), the CA bundle (REQUESTS_CA_BUNDLE,
    CURL_CA_BUNDLE, else certifi's, as requests), no retries below ours (a retry is a new attempt with its
    backoff, counted in the row), redirects never followed.
    """
    timeout = timeout_seconds if timeout_seconds is not None else settings.OUTBOUND_HTTP_TIMEOUT_SECONDS
    options = {
        "num_pools": 1,
        "maxsize": concurrency,
        "block": True,  # never more connections than sending threads
        "retries": False,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
    }
    if url.lower().startswith("https:"):
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or requests.utils.DEFAULT_CA_BUNDLE_PATH
        options["cert_reqs"] = "CERT_REQUIRED"
        options["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    manager = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
    parts = urllib3.util.parse_url(url)
    # A plain-HTTP request through a proxy names the whole URL; HTTPS goes through a CONNECT tunnel.
    request_target = parts._replace(fragment=None).url if proxy and parts.scheme == "http" else parts.request_uri
    pool = manager.connection_from_url(url)
    if not proxy:
        # Connections check the addresses they connect to (SSRF: a name rebound to an internal address between
        # the check before each request and the connection). Through a proxy, the proxy resolves the name.
        pool.ConnectionCls = PublicAddressHTTPSConnection if parts.scheme == "https" else PublicAddressHTTPConnection
    return HttpTarget(
        manager=manager,
        pool=pool,
        url=url,
        request_target=request_target,
        headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": user_agent},
    )


@dataclass(frozen=True)
class HttpResult:
    """One request's fate. `status` set: the server answered (any status). Else `error` says why not, and
    `transient` whether a later attempt may meet another fate (a timeout) or cannot (a refused URL)."""

    status: int | None = None
    data: bytes = b""
    retry_after: float | None = None
    error: str | None = None
    transient: bool = False


# urllib3's errors (no retries: raised as they happen) that a later attempt may not meet, named as requests
# named them (`last_error` starts with the name). A new connection that failed is a NewConnectionError, which
# urllib3 also makes a ConnectTimeoutError: it is tested first.
_TRANSIENT_ERRORS = (
    (urllib3.exceptions.ReadTimeoutError, "ReadTimeout"),
    (urllib3.exceptions.NewConnectionError, "ConnectionError"),
    (urllib3.exceptions.ConnectTimeoutError, "ConnectTimeout"),
    (urllib3.exceptions.TimeoutError, "Timeout"),
    # A connection reset or closed mid-exchange, TLS and proxy failures.
    ((urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError, urllib3.exceptions.ProxyError), "ConnectionError"),
)


def http_url_refusal(*, url: str) -> HttpResult | None:
    """The SSRF guard at send time: the URL was checked when set, but its host may resolve elsewhere now."""
    try:
        outbound_url_check(url=url)
    except OutboundUrlUnresolved as error:
        return HttpResult(error=str(error), transient=True)
    except OutboundUrlRefused as error:
        return HttpResult(error=f"Not sent: {error}")
    return None


def http_post(*, target: HttpTarget, body: bytes, headers: dict[str, str]) -> HttpResult:
    """POSTs `body` on the run's pool, the URL checked first (SSRF). Never raises for what the network or the
    server does: every fate is an HttpResult."""
    refusal = http_url_refusal(url=target.url)
    if refusal is not None:
        return refusal
    try:
        response = target.pool.urlopen(
            "POST",
            target.request_target,
            body=body,
            headers={**target.headers, **headers},
            # A redirected POST may turn into a GET or go elsewhere: a 3xx is answered as it is (a failure).
            redirect=False,
            retries=False,
            assert_same_host=False,
        )
    except OutboundAddressRefused as error:
        return HttpResult(error=f"Not sent: {error}")
    except urllib3.exceptions.HTTPError as error:
        for kinds, name in _TRANSIENT_ERRORS:
            if isinstance(error, kinds):
                return HttpResult(error=f"{name}: {error}", transient=True)
        # An invalid URL and the like: retrying cannot help.
        return HttpResult(error=f"{error.__class__.__name__}: {error}")
    except ValueError as error:  # http.client refuses the request line or a header value: the same
        return HttpResult(error=f"{error.__class__.__name__}: {error}")
    return HttpResult(status=response.status, data=response.data, retry_after=_retry_after_seconds(response))


def http_body_start(data: bytes) -> str:
    """The start of an answer's body, for an error message."""
    return data[:1200].decode("utf-8", errors="replace")[:300]


def _retry_after_seconds(response: urllib3.BaseHTTPResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:  # absent, or an HTTP date: the backoff alone decides
        return None


def http_send_and_collect(
    *,
    items: Sequence[Any],
    send: Callable[[Any], Any],
    record: Callable[[list[tuple[Any, Any]]], None],
    renew: Callable[[], None],
    renew_every: float,
    release: Callable[[list[Any]], None],
    concurrency: int,
    thread_name_prefix: str,
) -> None:
    """Sends a fixed batch of `items` in order: `http_send_pipeline` with one claim and one key."""
    batches = [list(items)]
    http_send_pipeline(
        claim=lambda outstanding: batches.pop() if batches else [],
        key=lambda item: None,
        send=send,
        record=record,
        renew=renew,
        renew_every=renew_every,
        release=release,
        concurrency=concurrency,
        key_concurrency=concurrency,
        thread_name_prefix=thread_name_prefix,
    )


def http_send_pipeline(
    *,
    claim: Callable[[Counter], Sequence[Any]],
    key: Callable[[Any], Hashable],
    send: Callable[[Any], Any],
    record: Callable[[list[tuple[Any, Any]]], None],
    renew: Callable[[], None],
    renew_every: float,
    release: Callable[[list[Any]], None],
    concurrency: int,
    key_concurrency: int,
    thread_name_prefix: str,
    deadline: float | None = None,
) -> None:
    """Sends what `claim` hands out on up to `concurrency` threads that only do HTTP (`send(item)` -> outcome,
    never raising) and each take their next item themselves, and on this thread records answers as they come:
    each `record` call gets every (item, outcome) that arrived while the previous one was written (one statement
    per call, not per answer).

    No round barrier: `claim(held)` is called again whenever fewer items wait for a thread than there are
    threads, while the slowest requests are still in flight (`held` counts, per key, what waits for a thread or
    is in flight, so the caller can bound what one key holds; answers not yet recorded do not count, or a slow
    write would starve the threads). It is called again after an empty claim only once an answer was recorded
    (an answer may release more work) or a second passed (work may come meanwhile while the answers a slow key
    owes do not); the pipeline ends when a claim is empty and nothing claimed is unrecorded. Items start in claim order, except that one key (an endpoint) never has more
    than `key_concurrency` in flight: a slow or timing-out key holds at most that many threads, never the others'.

    `renew` runs every `renew_every` seconds (the claims' leases then only have to outlast one request and that
    interval). At `deadline` (time.monotonic()) nothing more is claimed or started: what waits is released and
    the requests in flight are awaited, so a run lasts at most its deadline plus one request's timeout.
    Interrupted (soft time limit, shutdown): requests in flight finish or time out on their own and keep their
    lease (they may have arrived); `release` gets the items that never started, to hand back at once.
    """
    answers: queue.SimpleQueue = queue.SimpleQueue()
    # Shared with the sending threads, under `turn`: what was claimed and not started, per key in claim order,
    # and what is in flight per key. A thread that has an answer takes the next item itself: no thread waits
    # for this one to finish writing a batch.
    turn = threading.Condition()
    waiting: dict[Hashable, deque[tuple[int, Any]]] = {}
    in_flight = Counter()
    closed = False
    outstanding = Counter()  # this thread's count per key: claimed, neither recorded nor released
    claimed_count = 0

    def take() -> Any | None:
        # The oldest claimed item among the keys with a free slot (called under `turn`).
        heads = [(items[0][0], item_key) for item_key, items in waiting.items() if in_flight[item_key] < key_concurrency]
        if not heads:
            return None
        _, item_key = min(heads, key=lambda head: head[0])
        in_flight[item_key] += 1
        items = waiting[item_key]
        item = items.popleft()[1]
        if not items:
            del waiting[item_key]  # `waiting` holds only keys with items: each take looks at each key
        return item

    def sender() -> None:
        # Nothing is startable while a thread waits on `turn` (it waits only once `take` found nothing), and an
        # answer frees one slot, which the thread that got the answer fills itself: so an answer wakes no one,
        # and a claim wakes as many threads as it brought items. (Waking every thread at each answer, most of
        # them to find nothing for their key, cost a run a fifth of the GIL time its threads had.)
        answered = None
        while True:
            with turn:
                if answered is not None:
                    in_flight[key(answered[0])] -= 1
                item = take()
            if answered is not None:
                answers.put(answered)  # before any wait: this answer may be what the run waits for to claim
                answered = None
            if item is None:
                with turn:
                    item = take()
                    while item is None and not closed:
                        turn.wait()
                        item = take()
                if item is None:
                    return
            answered = (item, send(item))

    def waiting_drain() -> list[Any]:
        with turn:
            items = [item for item_key in list(waiting) for _, item in waiting.pop(item_key)]
        for item in items:
            outstanding[key(item)] -= 1
        return items

    threads: list[threading.Thread] = []
    try:
        may_claim = True
        renewed_at = claimed_at = time.monotonic()
        while True:
            past_deadline = deadline is not None and time.monotonic() >= deadline
            if past_deadline:
                untried = waiting_drain()
                if untried:
                    release(untried)
            with turn:
                # Waiting items of a key at its limit do not count: a slow key's backlog must not stop the claims
                # that feed the other keys.
                ready = sum(len(items) for item_key, items in waiting.items() if in_flight[item_key] < key_concurrency)
                held = Counter(in_flight)
                for item_key, items in waiting.items():
                    held[item_key] += len(items)
            if time.monotonic() >= claimed_at + 1.0:
                may_claim = True  # new work may have come meanwhile, though no answer came to say so
            if may_claim and not past_deadline and ready < concurrency:
                claimed_at = time.monotonic()
                claimed = claim(+held)
                may_claim = bool(claimed)
                if claimed:
                    with turn:
                        for item in claimed:
                            waiting.setdefault(key(item), deque()).append((claimed_count, item))
                            claimed_count += 1
                            outstanding[key(item)] += 1
                        turn.notify(len(claimed))
                    # Threads as they are needed, up to `concurrency`: a run of one delivery starts one.
                    while len(threads) < min(concurrency, claimed_count):
                        threads.append(threading.Thread(target=sender, name=f"{thread_name_prefix}_{len(threads)}", daemon=True))
                        threads[-1].start()
            if not sum(outstanding.values()):
                if may_claim and not past_deadline:
                    continue
                return
            results = []
            wait_until = min(renewed_at + renew_every, claimed_at + 1.0)
            if deadline is not None and not past_deadline:
                wait_until = min(wait_until, deadline)
            try:
                results.append(answers.get(timeout=max(0.0, wait_until - time.monotonic())))
                while not answers.empty():
                    results.append(answers.get())
            except queue.Empty:
                pass
            if time.monotonic() >= renewed_at + renew_every:
                renew()
                renewed_at = time.monotonic()
            if results:
                record(results)
                for item, _ in results:
                    outstanding[key(item)] -= 1
                may_claim = True
    finally:
        untried = waiting_drain()
        with turn:
            closed = True
            turn.notify_all()
        if untried:
            release(untried)
