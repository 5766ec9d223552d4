"""Chats and messages through the client API: numbers allocated at once (202), rows persisted by a drain."""

import json

import pytest
from django.conf import settings
from django_tenants.utils import schema_context

from core.tests.support import api_client
from conversations.apis import ChatListCreateApi, MessageBodySerializer
from conversations import creations, services
from conversations.models import Application, Chat, Message
from core.redis import get_redis


def _chats_url(application: Application) -> str:
    return f"/api/applications/{application.token}/chats"


def _pending(tenant) -> int:
    with schema_context(tenant.schema_name):
        return creations.pending_count()


def _no_id_anywhere(value) -> bool:
    if isinstance(value, dict):
        return "id" not in value and all(_no_id_anywhere(item) for item in value.values())
    if isinstance(value, list):
        return all(_no_id_anywhere(item) for item in value)
    return True


def test_chat_create_answers_its_number_and_a_drain_persists_the_row(tenant_a, application_a, client_a, drain):
    # when
    response = client_a.post(_chats_url(application_a), {"customer_id": "cust-42"})

    # then the number is answered at once, and the row only exists once drained
    assert response.status_code == 202
    assert response.json() == {"number": 1}
    assert drain.scheduled == 1
    assert client_a.get(f"{_chats_url(application_a)}/1").status_code == 404

    assert drain(tenant_a) == 1

    chat = client_a.get(f"{_chats_url(application_a)}/1")
    assert chat.status_code == 200
    body = chat.json()
    assert body == {
        "number": 1,
        "status": "waiting",
        "customer_id": "cust-42",
        "assigned_agent": None,
        "messages_count": 0,
        "created_at": body["created_at"],
        "assigned_at": None,
        "resolved_at": None,
        "sla": None,
    }
    with schema_context(tenant_a.schema_name):
        assert Application.objects.get(id=application_a.id).chats_count == 1


def test_numbers_start_at_one_per_application_and_per_chat(tenant_a, application_a, client_a, drain):
    with schema_context(tenant_a.schema_name):
        other = services.application_create(name="Other")

    numbers_a = [client_a.post(_chats_url(application_a), {}).json()["number"] for _ in range(3)]
    numbers_other = [client_a.post(_chats_url(other), {}).json()["number"] for _ in range(2)]
    messages_1 = [client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": f"m{i}"}).json() for i in range(3)]
    messages_2 = [client_a.post(f"{_chats_url(application_a)}/2/messages", {"body": "x"}).json() for _ in range(2)]
    drain(tenant_a)

    assert numbers_a == [1, 2, 3]
    assert numbers_other == [1, 2]
    assert messages_1 == [{"chat_number": 1, "number": n} for n in (1, 2, 3)]
    assert messages_2 == [{"chat_number": 2, "number": n} for n in (1, 2)]
    with schema_context(tenant_a.schema_name):
        assert list(Chat.objects.filter(application=application_a).values_list("number", "messages_count")) == [
            (1, 3), (2, 2), (3, 0),
        ]  # fmt: skip
        assert Application.objects.get(id=other.id).chats_count == 2
        assert Application.objects.get(id=application_a.id).chats_count == 3


def test_a_staff_token_makes_an_agent_message(tenant_a, application_a, client_a, agent_a, agent_a_api, drain):
    client_a.post(_chats_url(application_a), {})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "Hello?"})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):  # only the assigned agent (or an admin) may reply
        Chat.objects.filter(number=1).update(assigned_agent=agent_a, status=Chat.Status.ASSIGNED)
    agent_a_api.post(f"{_chats_url(application_a)}/1/messages", {"body": "Hi, how can I help?"})
    drain(tenant_a)

    listed = client_a.get(f"{_chats_url(application_a)}/1/messages").json()["data"]

    assert [(m["number"], m["sender"], m["body"]) for m in listed] == [
        (1, "customer", "Hello?"),
        (2, "agent", "Hi, how can I help?"),
    ]
    with schema_context(tenant_a.schema_name):
        assert list(Message.objects.order_by("number").values_list("author_id", flat=True)) == [None, agent_a.id]


def test_message_for_a_chat_number_never_allocated_is_404_and_queues_nothing(tenant_a, application_a, client_a, drain):
    client_a.post(_chats_url(application_a), {})
    pending_before = _pending(tenant_a)

    response = client_a.post(f"{_chats_url(application_a)}/2/messages", {"body": "anyone?"})

    assert response.status_code == 404
    assert response.json() == {"detail": "No chat with this number."}
    assert _pending(tenant_a) == pending_before


def test_a_message_to_chat_number_0_is_404_and_queues_nothing(tenant_a, application_a, client_a, drain):
    # Chats are numbered from 1; the route's <int:number> matches 0 too.
    client_a.post(_chats_url(application_a), {})
    drain(tenant_a)

    response = client_a.post(f"{_chats_url(application_a)}/0/messages", {"body": "anyone?"})

    assert response.status_code == 404
    assert response.json() == {"detail": "No chat with this number."}
    assert _pending(tenant_a) == 0
    with schema_context(tenant_a.schema_name):
        assert not get_redis().exists(creations.messages_counter_key(application_a.id, 0))
        assert Message.objects.count() == 0


def test_a_message_to_an_allocated_chat_is_accepted_before_the_chat_is_persisted(tenant_a, application_a, client_a, drain):
    client_a.post(_chats_url(application_a), {})

    response = client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "quick"})
    drain(tenant_a)

    assert response.status_code == 202
    assert client_a.get(f"{_chats_url(application_a)}/1").json()["messages_count"] == 1


@pytest.mark.parametrize(
    "path, method",
    [
        ("/chats", "get"), ("/chats", "post"), ("/chats/1", "get"), ("/chats/1/messages", "get"),
        ("/chats/1/messages", "post"), ("/chats/1/messages/1", "get"), ("/chats/1/messages/1", "patch"),
        ("/chats/1/messages/search?q=a", "get"),
    ],
)  # fmt: skip
def test_unknown_application_token_is_404_everywhere(tenant_a, client_a, path, method):
    response = getattr(client_a, method)(f"/api/applications/nope{path}", {"body": "x"} if method != "get" else None)

    assert response.status_code == 404
    assert response.json() == {"detail": "No application with this token."}
    assert _pending(tenant_a) == 0


@pytest.mark.parametrize(
    "body",
    # (NUL and lone surrogates are refused by the parser, before any serializer: core/tests/test_input.py)
    [{}, {"body": ""}, {"body": None}, {"body": "x" * (settings.MESSAGE_MAX_LENGTH + 1)}, {"body": 5}, {"body": ["x"]}],
)
def test_bad_message_body_is_400_and_queues_nothing(tenant_a, application_a, client_a, drain, body):
    client_a.post(_chats_url(application_a), {})
    pending_before = _pending(tenant_a)

    response = client_a.post(f"{_chats_url(application_a)}/1/messages", body)

    assert response.status_code == 400
    assert list(response.json()) == ["body"]
    assert _pending(tenant_a) == pending_before


@pytest.mark.parametrize(
    "raw",
    ['{}', '{"body": ""}', '{"body": null}', '{"body": 5}', '{"body": 1.5}',
     '{"body": ["x"]}', '{"body": true}', '[]', '"body"', json.dumps({"body": "x" * (settings.MESSAGE_MAX_LENGTH + 1)})],
)  # fmt: skip
def test_a_refused_message_body_gets_the_serializers_own_400(tenant_a, application_a, client_a, drain, raw):
    # The create checks a plain string body without building a serializer; anything it does not take must
    # get exactly the serializer's answer.
    client_a.post(_chats_url(application_a), {})
    pending_before = _pending(tenant_a)
    serializer = MessageBodySerializer(data=json.loads(raw))
    assert not serializer.is_valid()

    response = client_a.post(f"{_chats_url(application_a)}/1/messages", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == json.loads(json.dumps(serializer.errors))
    assert _pending(tenant_a) == pending_before


@pytest.mark.parametrize(("raw", "stored"), [('{"body": "  "}', "  "), ('{"body": "caf\\u00e9 \\ud83d\\ude00"}', "café 😀")])
def test_an_accepted_message_body_is_stored_as_the_serializer_reads_it(tenant_a, application_a, client_a, drain, raw, stored):
    client_a.post(_chats_url(application_a), {})

    response = client_a.post(f"{_chats_url(application_a)}/1/messages", raw, content_type="application/json")
    drain(tenant_a)

    assert response.status_code == 202
    assert client_a.get(f"{_chats_url(application_a)}/1/messages/1").json()["body"] == stored


def test_longest_body_allowed_is_accepted(tenant_a, application_a, client_a, drain):
    client_a.post(_chats_url(application_a), {})

    response = client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "x" * settings.MESSAGE_MAX_LENGTH})
    drain(tenant_a)

    assert response.status_code == 202
    assert len(client_a.get(f"{_chats_url(application_a)}/1/messages/1").json()["body"]) == settings.MESSAGE_MAX_LENGTH


@pytest.mark.parametrize("customer_id", ["", "x" * 256, {"a": 1}])
def test_bad_customer_id_is_400(tenant_a, application_a, client_a, drain, customer_id):
    response = client_a.post(_chats_url(application_a), {"customer_id": customer_id})

    assert response.status_code == 400
    assert list(response.json()) == ["customer_id"]
    assert _pending(tenant_a) == 0


@pytest.mark.parametrize(
    "raw",
    ['{"customer_id": ""}', '{"customer_id": "  "}', '{"customer_id": "\\u00a0"}', json.dumps({"customer_id": "x" * 256}),
     json.dumps({"customer_id": " " + "x" * 256}), '{"customer_id": {"a": 1}}', '{"customer_id": ["c"]}',
     '{"customer_id": true}', '{"customer_id": 42}', '{"customer_id": 1.5}', '[]', '"customer_id"'],
)  # fmt: skip
def test_a_refused_customer_id_gets_the_serializers_own_400(tenant_a, application_a, client_a, drain, raw):
    # The create checks a plain string customer_id without building a serializer (apis._chat_customer_id);
    # anything it does not take must get exactly the serializer's answer, and nothing queued.
    serializer = ChatListCreateApi.InputSerializer(data=json.loads(raw))
    assert not serializer.is_valid()

    response = client_a.post(_chats_url(application_a), raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == json.loads(json.dumps(serializer.errors))
    assert _pending(tenant_a) == 0


@pytest.mark.parametrize(
    ("raw", "stored"),
    [('{}', None), ('{"customer_id": null}', None), ('{"customer_id": "cust-7"}', "cust-7"),
     ('{"customer_id": " cust-7 "}', "cust-7"), ('{"customer_id": "\\u2003cust-7\\n"}', "cust-7"),
     ('{"customer_id": "a b"}', "a b"),
     ('{"customer_id": "caf\\u00e9 \\ud83d\\ude00"}', "café 😀"), ('{"customer_id": "c", "unknown": 1}', "c"),
     (json.dumps({"customer_id": "x" * 255}), "x" * 255), (json.dumps({"customer_id": "x" * 255 + "  "}), "x" * 255)],
)  # fmt: skip
def test_an_accepted_customer_id_is_stored_as_the_serializer_reads_it(tenant_a, application_a, client_a, drain, raw, stored):
    serializer = ChatListCreateApi.InputSerializer(data=json.loads(raw))
    assert serializer.is_valid() and serializer.validated_data.get("customer_id") == stored

    response = client_a.post(_chats_url(application_a), raw, content_type="application/json")
    drain(tenant_a)

    assert response.status_code == 202
    assert client_a.get(f"{_chats_url(application_a)}/{response.json()['number']}").json()["customer_id"] == stored


def test_numbers_continue_after_redis_loses_its_counters(tenant_a, application_a, client_a, drain):
    # given two chats, the first with two messages, all persisted
    client_a.post(_chats_url(application_a), {})
    client_a.post(_chats_url(application_a), {})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "a"})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "b"})
    drain(tenant_a)

    # when Redis loses every counter of the tenant
    redis = get_redis()
    redis.delete(*redis.keys(f"sociomile:{tenant_a.schema_name}:app:*"))

    # then numbering resumes from the database, without repeating a number
    assert client_a.post(_chats_url(application_a), {}).json() == {"number": 3}
    assert client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "c"}).json() == {"chat_number": 1, "number": 3}
    assert client_a.post(f"{_chats_url(application_a)}/2/messages", {"body": "d"}).json() == {"chat_number": 2, "number": 1}
    assert client_a.post(f"{_chats_url(application_a)}/9/messages", {"body": "e"}).status_code == 404
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        assert list(Chat.objects.values_list("number", "messages_count")) == [(1, 3), (2, 1), (3, 0)]


def test_a_redelivered_drain_writes_nothing_twice(tenant_a, application_a, client_a, drain):
    # given creations queued, and a copy of them as a drain that died before trimming would leave them
    client_a.post(_chats_url(application_a), {})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "once"})
    with schema_context(tenant_a.schema_name):
        records = creations.pending_peek(100)
    drain(tenant_a)

    # when the same records are drained again
    redis = get_redis()
    with schema_context(tenant_a.schema_name):
        import json

        redis.rpush(creations.pending_key(), *[json.dumps(record) for record in records])
    drain(tenant_a)

    # then one chat, one message, and counts of one
    with schema_context(tenant_a.schema_name):
        assert list(Chat.objects.values_list("number", "messages_count")) == [(1, 1)]
        assert Message.objects.count() == 1
        assert Application.objects.get(id=application_a.id).chats_count == 1


def test_list_chats_by_status_and_reject_unknown_status(tenant_a, application_a, client_a, drain):
    for _ in range(3):
        client_a.post(_chats_url(application_a), {})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(number=2).update(status=Chat.Status.RESOLVED)

    waiting = client_a.get(f"{_chats_url(application_a)}?status=waiting").json()
    resolved = client_a.get(f"{_chats_url(application_a)}?status=resolved").json()
    everything = client_a.get(f"{_chats_url(application_a)}?limit=2").json()

    assert [chat["number"] for chat in waiting["data"]] == [1, 3]
    assert [chat["number"] for chat in resolved["data"]] == [2]
    assert [chat["number"] for chat in everything["data"]] == [1, 2]
    rest = client_a.get(f"{_chats_url(application_a)}?limit=2&cursor={everything['next_cursor']}").json()
    assert [chat["number"] for chat in rest["data"]] == [3]
    assert client_a.get(f"{_chats_url(application_a)}?status=open").status_code == 400


def test_edit_a_message_with_put_and_patch(tenant_a, application_a, client_a, drain):
    client_a.post(_chats_url(application_a), {})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "typo"})
    drain(tenant_a)
    url = f"{_chats_url(application_a)}/1/messages/1"

    put = client_a.put(url, {"body": "fixed"})
    patch = client_a.patch(url, {"body": "fixed again"})

    assert put.status_code == 200 and put.json()["body"] == "fixed"
    assert patch.status_code == 200 and patch.json()["body"] == "fixed again"
    assert client_a.patch(url, {"body": ""}).status_code == 400
    assert client_a.get(url).json()["body"] == "fixed again"
    assert client_a.get(f"{_chats_url(application_a)}/1/messages/2").status_code == 404
    assert client_a.get(f"{_chats_url(application_a)}/2/messages/1").status_code == 404


def test_search_finds_substrings_ignoring_case_within_one_chat(tenant_a, application_a, client_a, drain):
    client_a.post(_chats_url(application_a), {})
    client_a.post(_chats_url(application_a), {})
    for body in ["My PASSWORD expired", "reset please", "passwords again", "nothing here"]:
        client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": body})
    client_a.post(f"{_chats_url(application_a)}/2/messages", {"body": "password in another chat"})
    drain(tenant_a)
    search = f"{_chats_url(application_a)}/1/messages/search"

    middle_of_word = client_a.get(f"{search}?q=sSwOr").json()
    other_word = client_a.get(f"{search}?q=ese").json()
    literal_percent = client_a.get(f"{search}?q=%25").json()

    assert [(m["number"], m["body"]) for m in middle_of_word["data"]] == [(1, "My PASSWORD expired"), (3, "passwords again")]
    assert all(m["chat_number"] == 1 for m in middle_of_word["data"])
    assert [m["body"] for m in other_word["data"]] == ["reset please"]
    assert literal_percent["data"] == []
    assert client_a.get(f"{search}").status_code == 400
    assert client_a.get(f"{search}?q=").status_code == 400
    paged = client_a.get(f"{search}?q=pass&limit=1").json()
    assert [m["number"] for m in paged["data"]] == [1]
    assert [m["number"] for m in client_a.get(f"{search}?q=pass&limit=1&cursor={paged['next_cursor']}").json()["data"]] == [3]


def test_no_response_carries_a_database_id(tenant_a, application_a, client_a, tenant_a_admin_api, drain):
    client_a.post(_chats_url(application_a), {"customer_id": "c"})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "hello"})
    drain(tenant_a)
    base = _chats_url(application_a)

    responses = [
        tenant_a_admin_api.post("/api/applications", {"name": "x"}),
        tenant_a_admin_api.get("/api/applications"),
        tenant_a_admin_api.get(f"/api/applications/{application_a.token}"),
        client_a.get(base), client_a.get(f"{base}/1"), client_a.get(f"{base}/1/messages"),
        client_a.get(f"{base}/1/messages/1"), client_a.get(f"{base}/1/messages/search?q=ell"),
        client_a.post(base, {}), client_a.post(f"{base}/1/messages", {"body": "x"}),
    ]  # fmt: skip

    assert all(response.status_code in (200, 201, 202) for response in responses)
    assert all(_no_id_anywhere(response.json()) for response in responses)


def test_application_tokens_do_not_cross_tenants(tenant_a, tenant_b, application_a, drain):
    client_b = api_client(tenant=tenant_b)

    assert client_b.post(_chats_url(application_a), {}).status_code == 404
    assert client_b.get(_chats_url(application_a)).status_code == 404
    assert _pending(tenant_a) == 0 and _pending(tenant_b) == 0


def test_a_creation_postgres_refuses_is_parked_and_does_not_block_the_rest(tenant_a, application_a, client_a, drain):
    # given a chat queued for an application that is deleted before the drain, and one for a live one
    with schema_context(tenant_a.schema_name):
        doomed = services.application_create(name="Doomed")
    client_a.post(_chats_url(doomed), {})
    client_a.post(_chats_url(application_a), {})
    with schema_context(tenant_a.schema_name):
        Application.objects.filter(id=doomed.id).delete()

    # when drained
    drain(tenant_a)

    # then the live chat is persisted, the refused one parked with its error, and nothing is pending
    with schema_context(tenant_a.schema_name):
        assert list(Chat.objects.values_list("application_id", "number")) == [(application_a.id, 1)]
        parked = get_redis().lrange(creations.pending_key() + ":dead", 0, -1)
    assert len(parked) == 1 and b"conversations_chat_application_id" in parked[0]
    assert _pending(tenant_a) == 0


def test_a_refused_creation_alone_in_its_batch_is_parked_too(tenant_a, client_a, drain):
    # The usual batch at low traffic is a single record: it must be parked like one refused within a batch,
    # not fail the drain and stay at the head of the list.
    with schema_context(tenant_a.schema_name):
        doomed = services.application_create(name="Doomed")
    client_a.post(_chats_url(doomed), {})
    with schema_context(tenant_a.schema_name):
        Application.objects.filter(id=doomed.id).delete()

    drain(tenant_a)

    with schema_context(tenant_a.schema_name):
        assert Chat.objects.count() == 0
        parked = get_redis().lrange(creations.pending_key() + ":dead", 0, -1)
    assert len(parked) == 1 and b"conversations_chat_application_id" in parked[0]
    assert _pending(tenant_a) == 0


def test_counts_reconcile_repairs_drift(tenant_a, application_a, client_a, drain):
    client_a.post(_chats_url(application_a), {})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "a"})
    client_a.post(f"{_chats_url(application_a)}/1/messages", {"body": "b"})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        Chat.objects.update(messages_count=7)
        Application.objects.update(chats_count=0)

        assert services.counts_reconcile() == 2
        assert services.counts_reconcile() == 0
        assert Chat.objects.get().messages_count == 2
        assert Application.objects.get(id=application_a.id).chats_count == 1


def test_search_can_use_the_trigram_index(tenant_a):
    from django.db import connection

    def plan(queryset) -> str:
        sql, params = queryset.query.sql_with_params()
        with connection.cursor() as cursor:
            # On a small table the planner rightly prefers a scan; forbid it to see what an index can serve. Plain
            # index scans too: the trigram index serves a bitmap scan, and after other tests left this table's
            # pg_class estimates large (ANALYZE writes them in place, a rollback keeps them), a full scan of the
            # (chat, number) index, filtering every row, looked cheaper than it.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_indexscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())

    with schema_context(tenant_a.schema_name):
        ours = plan(Message.objects.filter(body__trigram_icontains="refund"))
        djangos = plan(Message.objects.filter(body__icontains="refund"))

    assert "message_search_idx" in ours, ours
    # why the lookup exists: Django's icontains is UPPER(body) LIKE ..., which the index cannot serve
    assert "message_search_idx" not in djangos, djangos


def test_a_drain_whose_lease_ran_out_leaves_the_trim_to_the_drain_that_took_over(
    tenant_a, application_a, client_a, drain, monkeypatch
):
    # given three queued chats, and a drain whose lease runs out while its batch commits: another drain
    # takes the lock (and read the same head of the list)
    for _ in range(3):
        client_a.post(_chats_url(application_a), {})
    persist_batch = services._persist_batch

    def slow_batch(records):
        added = persist_batch(records)
        with schema_context(tenant_a.schema_name):
            get_redis().set(creations.lock_key(), "another-drain")
        return added

    monkeypatch.setattr(services, "_persist_batch", slow_batch)

    # when the first drain finishes its batch
    handled = drain(tenant_a, batch_size=2)

    # then it stops without trimming: the records stay for the drain holding the lock (no record is
    # dropped unpersisted by a second trim), and the rows it committed are there once
    assert handled == 0
    assert _pending(tenant_a) == 3
    with schema_context(tenant_a.schema_name):
        assert get_redis().get(creations.lock_key()) == b"another-drain"
        assert sorted(Chat.objects.values_list("number", flat=True)) == [1, 2]

    # and when that drain runs (its lock released), everything is persisted exactly once
    monkeypatch.setattr(services, "_persist_batch", persist_batch)
    with schema_context(tenant_a.schema_name):
        get_redis().delete(creations.lock_key())
    assert drain(tenant_a, batch_size=2) == 3
    assert _pending(tenant_a) == 0
    with schema_context(tenant_a.schema_name):
        assert sorted(Chat.objects.values_list("number", flat=True)) == [1, 2, 3]
        assert Application.objects.get(id=application_a.id).chats_count == 3
