"""A short soak: 64 concurrent clients of mixed traffic on the LiveStack, then the invariants.

Clients create chats and messages, deliver signed webhook messages (some repeated with the same
`external_id`), reply to and resolve their agent's chats, read lists, and create outbound messages that
the scheduler (celery-beat, every second) sends to a local receiver. `--soak-seconds` sets how long
(30 s in the suite; run it for minutes with `./bin/test -m soak --soak-seconds 600`). Afterwards:

- every 2xx'd creation exists exactly once, numbers are contiguous from 1, counts are exact;
- no agent ever held more than its max_customers open chats (the Assignment history, replayed);
- each outbound message created was received exactly once by the receiver (by Idempotency-Key);
- a repeated webhook delivery got the first answer; every resolved chat is resolved;
- no request answered a 5xx or an unexpected 4xx.
"""

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests

from live_stack import creations_check, drained, wait_until, webhook_signature

pytestmark = [pytest.mark.soak]

CLIENTS = 64
AGENTS = 8
MAX_CUSTOMERS = 2


@dataclass
class Outcomes:
    """What the clients were answered; the shapes live_stack.creations_check reads, plus the rest."""

    chats: list = field(default_factory=list)  # (customer_id, number, at)
    messages: list = field(default_factory=list)  # (chat number, number, body)
    webhooks: list = field(default_factory=list)  # (customer_id, body, chat number, message number)
    repeats: list = field(default_factory=list)  # (first answer, repeated answer)
    resolved: list = field(default_factory=list)  # chat numbers answered 200 by resolve
    outbound: list = field(default_factory=list)  # ids answered 201
    unexpected: list = field(default_factory=list)  # (action, status, body)
    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(stack, tenant, index: int, until: float, outcomes: Outcomes) -> None:
    session = requests.Session()
    rng = random.Random(index)
    host, base = tenant.host, f"/api/applications/{tenant.app_token}"
    agent_id = list(tenant.agents)[index % len(tenant.agents)]
    agent_token = tenant.agents[agent_id]
    own_chats: list[int] = []
    deliveries: list[tuple[bytes, dict]] = []
    step = 0

    def call(action, method, path, *, expect, token=None, **kwargs):
        try:
            response = stack.request(session, method, path, host=host, token=token, timeout=30, **kwargs)
        except requests.RequestException as error:
            with outcomes.lock:
                outcomes.unexpected.append((action, 0, repr(error)))
            return None
        with outcomes.lock:
            outcomes.counts[action] += 1
            if response.status_code not in expect:
                outcomes.unexpected.append((action, response.status_code, response.text[:300]))
                return None
        return response

    while time.monotonic() < until:
        step += 1
        marker = f"{index}-{step}"
        roll = rng.random()
        if roll < 0.18 or not own_chats:
            response = call("chat", "POST", f"{base}/chats", expect={202}, json_body={"customer_id": f"c-{marker}"})
            if response is not None:
                number = response.json()["number"]
                own_chats.append(number)
                del own_chats[:-4]
                with outcomes.lock:
                    outcomes.chats.append((f"c-{marker}", number, time.monotonic()))
        elif roll < 0.40:
            chat_number = rng.choice(own_chats)
            response = call("message", "POST", f"{base}/chats/{chat_number}/messages", expect={202},
                            json_body={"body": f"m-{marker}"})  # fmt: skip
            if response is not None:
                with outcomes.lock:
                    outcomes.messages.append((chat_number, response.json()["number"], f"m-{marker}"))
        elif roll < 0.58:
            if deliveries and rng.random() < 0.15:  # the provider repeats a delivery it already made
                body, first = rng.choice(deliveries)
            else:
                payload = {"customer_id": f"w-{index}-{rng.randrange(4)}", "message": f"w-{marker}"}
                if rng.random() < 0.5:
                    payload["external_id"] = f"x-{marker}"
                body, first = json.dumps(payload).encode(), None
            response = call("webhook", "POST", f"/api/channels/{tenant.app_token}/webhook", expect={202}, data=body,
                            headers={"X-Sociomile-Signature": webhook_signature(tenant.webhook_secret, body)})  # fmt: skip
            if response is not None:
                answer = response.json()
                with outcomes.lock:
                    if first is not None:
                        outcomes.repeats.append((first, answer))
                    else:
                        payload = json.loads(body)
                        outcomes.webhooks.append((payload["customer_id"], payload["message"], answer["chat_number"],
                                                  answer["message_number"]))  # fmt: skip
                        if "external_id" in payload:
                            deliveries.append((body, answer))
        elif roll < 0.70:
            # the client's agent replies to one of its chats and resolves it (another client of the same
            # agent may resolve it first: 409)
            response = call("inbox", "GET", "/api/chats?agent=me&status=assigned&limit=5", expect={200}, token=agent_token)
            chats = response.json()["data"] if response is not None else []
            if chats:
                chat = rng.choice(chats)
                path = f"/api/applications/{chat['application']}/chats/{chat['number']}"
                response = call("reply", "POST", f"{path}/messages", expect={202, 403}, token=agent_token,
                                json_body={"body": f"r-{marker}"})  # fmt: skip
                if response is not None and response.status_code == 202:
                    with outcomes.lock:
                        outcomes.messages.append((chat["number"], response.json()["number"], f"r-{marker}"))
                response = call("resolve", "POST", f"{path}/resolve", expect={200, 409}, token=agent_token)
                if response is not None and response.status_code == 200:
                    with outcomes.lock:
                        outcomes.resolved.append(chat["number"])
        elif roll < 0.95:
            read = rng.randrange(4)
            if read == 0:
                call("read", "GET", f"{base}/chats/{rng.choice(own_chats)}/messages?limit=20", expect={200, 404})
            elif read == 1:
                call("read", "GET", f"{base}/chats/{rng.choice(own_chats)}", expect={200, 404})
            elif read == 2:
                call("read", "GET", "/api/queue?limit=10", expect={200}, token=tenant.admin_token)
            else:
                call("read", "GET", f"{base}/chats/{rng.choice(own_chats)}/messages/search?q=m-{index}", expect={200, 404})
        else:
            response = call("outbound", "POST", "/api/outbound-messages", expect={201}, token=tenant.admin_token,
                            json_body={"to": f"+62812{index:03d}{step:05d}"[:16], "content": f"o-{marker}"})  # fmt: skip
            if response is not None:
                with outcomes.lock:
                    outcomes.outbound.append(response.json()["id"])


def _max_open_chats_per_agent(stack, schema: str) -> dict[int, int]:
    """Replays the Assignment history: the most chats each agent held open at one instant."""
    rows = stack.sql(f'SELECT agent_id, assigned_at, ended_at FROM "{schema}".agents_assignment')
    edges: dict[int, list] = {}
    for agent_id, assigned_at, ended_at in rows:
        edges.setdefault(agent_id, []).append((assigned_at, 1))
        if ended_at is not None:
            edges[agent_id].append((ended_at, -1))
    peaks = {}
    for agent_id, events in edges.items():
        running = peak = 0
        for _at, step in sorted(events, key=lambda event: (event[0], event[1])):  # an end before a start at one instant
            running += step
            peak = max(peak, running)
        peaks[agent_id] = peak
    return peaks


def test_soak_mixed_traffic_keeps_every_invariant(live_stack, webhook_receiver, request):
    stack, seconds = live_stack, request.config.getoption("--soak-seconds")
    tenant = stack.bootstrap(slug="soak", agents=AGENTS, max_customers=MAX_CUSTOMERS)
    receiver = webhook_receiver
    admin = stack.session()
    response = stack.request(admin, "PATCH", "/api/scheduler", host=tenant.host, token=tenant.admin_token,
                             json_body={"webhook_url": receiver.url, "interval_seconds": 1, "batch_size": 20})  # fmt: skip
    assert response.status_code == 200, response.text
    assert stack.request(admin, "POST", "/api/scheduler/start", host=tenant.host, token=tenant.admin_token).status_code == 200

    # when 64 clients run mixed traffic for the soak's duration
    outcomes = Outcomes()
    until = time.monotonic() + seconds
    clients = [threading.Thread(target=_client, args=(stack, tenant, index, until, outcomes)) for index in range(CLIENTS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()

    # then, once the queue has drained and the scheduler has sent everything
    wait_until(lambda: drained(stack, tenant), timeout=60, interval=0.2, what="the creations queue to drain")
    schema = tenant.slug
    wait_until(lambda: stack.sql(f'SELECT count(*) FROM "{schema}".scheduler_outboundmessage WHERE status = %s',
                                 ["sent"])[0][0] == len(outcomes.outbound),
               timeout=60, interval=0.5, what="every outbound message to be sent")  # fmt: skip

    print(f"soak {seconds:.0f}s, {CLIENTS} clients: {dict(outcomes.counts)}; resolved {len(outcomes.resolved)}, "
          f"webhook repeats {len(outcomes.repeats)}, outbound {len(outcomes.outbound)}")  # fmt: skip
    assert outcomes.unexpected == []
    assert outcomes.counts["chat"] > 0 and outcomes.counts["resolve"] > 0 and outcomes.outbound
    assert creations_check(stack, tenant, outcomes) == {"chats": [], "messages": [], "counts": [], "duplicates": []}
    # no agent over capacity, at any instant of the run, and none now
    peaks = _max_open_chats_per_agent(stack, schema)
    assert peaks and max(peaks.values()) <= MAX_CUSTOMERS, peaks
    assert stack.sql(f'SELECT count(*) FROM "{schema}".agents_agent WHERE max_customers <> %s', [MAX_CUSTOMERS]) == [(0,)]
    # a repeated delivery got the first answer
    assert all(first == again for first, again in outcomes.repeats)
    # every resolve that answered 200 left its chat resolved
    resolved = {row[0] for row in stack.sql(f'SELECT number FROM "{schema}".conversations_chat WHERE status = %s '
                                            "AND application_id = %s", ["resolved", tenant.app_id])}  # fmt: skip
    assert set(outcomes.resolved) <= resolved
    # each outbound message reached the receiver exactly once, and nothing else did
    assert Counter(receiver.keys()) == Counter({message_id: 1 for message_id in outcomes.outbound})
