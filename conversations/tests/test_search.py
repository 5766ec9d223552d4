"""Message search pages: exact (every match, by number, once), case-insensitive, literal `%` `_` `\\`, and
bounded in what one page reads (conversations.selectors.message_search_page)."""

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

from conversations import selectors
from conversations.models import SEARCH_BUCKET_SIZE, Chat, Message


def _search_url(application, chat_number: int = 1) -> str:
    return f"/api/applications/{application.token}/chats/{chat_number}/messages/search"


def _chat_with_bodies(tenant, application, number: int, bodies: list[str], *, step: int = 1) -> Chat:
    """A chat whose message n * step (n from 1) has bodies[n - 1], written in one statement: thousands of
    messages in well under a second, where the API and a drain would take minutes."""
    with schema_context(tenant.schema_name):
        chat = Chat.objects.create(application=application, number=number, messages_count=len(bodies))
        now = timezone.now()
        Message.objects.bulk_create(
            Message(chat=chat, number=index * step, body=body, created_at=now)
            for index, body in enumerate(bodies, start=1)
        )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE conversations_message")
    return chat


def _every_page(client, url: str, *, q: str, limit: int, cursor: str | None = None) -> tuple[list[int], list[int]]:
    """Follows next_cursor to the end: (the numbers found in order, the size of each page)."""
    numbers, sizes = [], []
    while True:
        response = client.get(url, {"q": q, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.content
        page = response.json()
        numbers += [message["number"] for message in page["data"]]
        sizes.append(len(page["data"]))
        cursor = page["next_cursor"]
        if cursor is None:
            return numbers, sizes
        assert len(sizes) < 500, "the cursor does not advance"


def _body(number: int) -> str:
    # A word in ~1 message in 37, a capitalised one in 1 in 500, and the bucket boundaries' own neighbours.
    words = [f"message {number} about order {number * 7919 % 10007}"]
    if number % 37 == 0:
        words.append("please REFUND it")
    if number % 500 == 0 or number in (SEARCH_BUCKET_SIZE - 1, SEARCH_BUCKET_SIZE, SEARCH_BUCKET_SIZE + 1):
        words.append("Zebra crossing")
    return " ".join(words)


@pytest.mark.parametrize("limit", [1, 7, 50, 200])
def test_pages_hold_every_match_once_in_number_order_across_buckets(tenant_a, application_a, client_a, limit):
    # given a chat of 3,000 messages (three buckets) and another chat with the same bodies
    bodies = [_body(number) for number in range(1, 3001)]
    _chat_with_bodies(tenant_a, application_a, 1, bodies)
    _chat_with_bodies(tenant_a, application_a, 2, bodies)

    # when every page is read
    refund, sizes = _every_page(client_a, _search_url(application_a), q="refund", limit=limit)
    zebra, _ = _every_page(client_a, _search_url(application_a), q="zEBRA", limit=limit)

    # then each match of chat 1 comes once, by number, in full pages but the last
    assert refund == [number for number in range(1, 3001) if number % 37 == 0]
    assert zebra == [500, 1000, 1023, 1024, 1025, 1500, 2000, 2500, 3000]
    assert all(size == limit for size in sizes[:-1]) and sizes[-1] <= limit


def test_a_cursor_deep_into_the_chat_starts_right_after_it(tenant_a, application_a, client_a):
    _chat_with_bodies(tenant_a, application_a, 1, [_body(number) for number in range(1, 3001)])
    first = client_a.get(f"{_search_url(application_a)}?q=refund&limit=30").json()

    numbers, _ = _every_page(client_a, _search_url(application_a), q="refund", limit=50, cursor=first["next_cursor"])

    assert [m["number"] for m in first["data"]] == [37 * k for k in range(1, 31)]
    assert numbers == [37 * k for k in range(31, 3000 // 37 + 1)]


def test_matching_ignores_case_beyond_ascii_and_takes_like_wildcards_literally(tenant_a, application_a, client_a):
    bodies = [
        "L'ÉCOLE est fermée",  # 1
        "100% sure",  # 2
        "1000 sure",  # 3
        "snake_case name",  # 4
        "snakeXcase name",  # 5
        "back\\slash here",  # 6
        "backslash here",  # 7
        "ok",  # 8
        "OK then",  # 9
    ]
    _chat_with_bodies(tenant_a, application_a, 1, bodies)

    def found(q: str) -> list[int]:
        response = client_a.get(_search_url(application_a), {"q": q})
        assert response.status_code == 200, response.content
        return [message["number"] for message in response.json()["data"]]

    assert found("école") == [1]  # trigram path, non-ASCII case
    assert found("100%") == [2]  # trigram path with a wildcard character
    assert found("0% s") == [2]
    assert found("e_c") == [4]  # no trigram: the walk, `_` literal
    assert found("snake_case") == [4]
    assert found("k\\s") == [6]
    assert found("back\\slash") == [6]
    assert found("%") == [2]
    assert found("ok") == [8, 9]  # two characters
    assert found("é") == [1]  # one character, non-ASCII


def test_a_page_reads_a_bounded_share_of_the_chat_and_the_cursor_carries_on(
    tenant_a, application_a, client_a, monkeypatch
):
    # given a chat of 5,000 messages where a word appears twice, and pages allowed to read 2 buckets of numbers
    monkeypatch.setattr(selectors, "SEARCH_MAX_BUCKETS_PER_PAGE", 2)
    monkeypatch.setattr(selectors, "SEARCH_WALK_NUMBERS_PER_PAGE", SEARCH_BUCKET_SIZE)
    bodies = [f"message {number}" for number in range(1, 5001)]
    bodies[99] = "a rare Wombat"  # 100
    bodies[4899] = "another wombat"  # 4900
    bodies[2999] = "x!"  # 3000
    _chat_with_bodies(tenant_a, application_a, 1, bodies)

    # when every page is read
    wombat, wombat_pages = _every_page(client_a, _search_url(application_a), q="wombat", limit=10)
    short, short_pages = _every_page(client_a, _search_url(application_a), q="x!", limit=10)

    # then every match is found, and the pages between them are short or empty but keep a cursor
    assert wombat == [100, 4900]
    assert wombat_pages == [1, 0, 1]  # numbers 1-2047, 2048-4095, 4096-5000
    assert short == [3000]
    assert short_pages == [0, 0, 1, 0, 0]  # 1,024 numbers a page


def test_an_empty_or_exhausted_chat_answers_an_empty_last_page(tenant_a, application_a, client_a):
    _chat_with_bodies(tenant_a, application_a, 1, ["refund me"])
    _chat_with_bodies(tenant_a, application_a, 2, [])

    assert client_a.get(f"{_search_url(application_a, 2)}?q=refund").json() == {"data": [], "next_cursor": None}
    page = client_a.get(f"{_search_url(application_a)}?q=refund").json()
    assert [m["number"] for m in page["data"]] == [1] and page["next_cursor"] is None


def test_bad_cursors_and_limits_are_400_and_read_nothing(tenant_a, application_a, client_a):
    import base64

    _chat_with_bodies(tenant_a, application_a, 1, ["refund me"])

    def cursor(raw: str) -> str:
        return base64.b64encode(raw.encode()).decode()

    for bad in ["not-base64!", cursor("p=abc"), cursor("p=-1"), cursor("r=1&p=5")]:
        response = client_a.get(_search_url(application_a), {"q": "refund", "cursor": bad})
        assert response.status_code == 400 and response.json()["cursor"] == ["Invalid cursor."], bad
    assert client_a.get(_search_url(application_a), {"q": "refund", "limit": "0"}).status_code == 400
    # a cursor past the end is an empty last page
    assert client_a.get(_search_url(application_a), {"q": "refund", "cursor": cursor("p=99")}).json() == {
        "data": [],
        "next_cursor": None,
    }


def test_a_window_is_one_scan_of_the_search_index(tenant_a, application_a):
    # 2,000 messages over 20 buckets (numbers 10, 20, ...): one bucket is selective enough for the planner
    chat = _chat_with_bodies(tenant_a, application_a, 1, [_body(number) for number in range(1, 2001)], step=10)
    queries = []

    def capture(execute, sql, params, many, context):
        if "ILIKE" in sql:
            queries.append((sql, params))
        return execute(sql, params, many, context)

    with schema_context(tenant_a.schema_name):
        with connection.execute_wrapper(capture):
            selectors.message_search_page(chat=chat, query="refund", after=0, limit=10)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # a small table: see what the plan can use
            captured = []
            for sql, params in queries:
                cursor.execute(f"EXPLAIN {sql}", params)
                captured.append("\n".join(row[0] for row in cursor.fetchall()))

    assert captured and all("message_search_idx" in plan for plan in captured), captured
    # the chat and the window are index conditions (its bucket keys), not filters on every match of the tenant
    assert all("&&" in plan.split("Index Cond")[1] for plan in captured), captured


def test_every_tenant_schema_has_the_search_index_and_default_body_statistics(tenant_a, tenant_b):
    # The search query leaves the planner no choice that depends on a word's frequency (migration 0007), and
    # ILIKE estimates against a 1000-entry histogram cost ~2 ms of planning per query.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n.nspname, a.attstattarget, pg_get_indexdef(i.indexrelid) FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_index i ON i.indrelid = c.oid JOIN pg_class ic ON ic.oid = i.indexrelid
            WHERE c.relname = 'conversations_message' AND a.attname = 'body' AND n.nspname = ANY(%s)
              AND ic.relname = 'message_search_idx'
            """,
            [[tenant_a.schema_name, tenant_b.schema_name]],
        )
        rows = {schema: (target, definition) for schema, target, definition in cursor.fetchall()}

    assert set(rows) == {tenant_a.schema_name, tenant_b.schema_name}
    assert all(target == -1 for target, _ in rows.values())
    assert all("gin" in definition and "4194304" in definition and "gin_trgm_ops" in definition for _, definition in rows.values())
