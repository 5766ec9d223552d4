import pytest


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", "٣"])
def test_a_limit_outside_1_to_200_is_a_400(platform_api, limit):
    response = platform_api.get(f"/api/tenants?limit={limit}")

    assert response.status_code == 400
    assert response.json() == {"limit": ["Must be an integer from 1 to 200."]}


@pytest.mark.parametrize("limit", ["1", "200"])
def test_a_limit_from_1_to_200_is_served(platform_api, session_tenants, limit):
    response = platform_api.get(f"/api/tenants?limit={limit}")

    assert response.status_code == 200
    assert len(response.json()["data"]) == min(int(limit), len(session_tenants))


def _cursor(raw: str) -> str:
    import base64

    return base64.b64encode(raw.encode()).decode()


@pytest.mark.parametrize("position", ["x", "1.5", "2026-13-45"])
def test_a_forged_cursor_position_is_a_400_on_every_list(platform_api, tenant_a_admin_api, tenant_a, position, monkeypatch):
    # Only the server makes cursors, but a forged one (a position that is no value of the list's ordering
    # field) is bad input: a 400 naming the cursor, whatever the field, never a 500.
    from django_tenants.utils import schema_context

    from conversations import services

    monkeypatch.setattr(services, "_drain_schedule", lambda: None)  # drained here, below
    with schema_context(tenant_a.schema_name):
        application = services.application_create(name="cursors")
        services.chat_create(application=application)
        services.creations_persist(batch_size=10)
    token = application.token
    tenant_lists = [
        "/api/applications", f"/api/applications/{token}/chats", f"/api/applications/{token}/chats/1/messages",
        "/api/chats", "/api/tickets", "/api/agents", "/api/outbound-messages", "/api/labels", "/api/canned-responses",
    ]  # fmt: skip
    cursor = _cursor(f"p={position}")

    answers = {path: tenant_a_admin_api.get(path, {"cursor": cursor}) for path in tenant_lists}
    answers["/api/tenants"] = platform_api.get("/api/tenants", {"cursor": cursor})

    assert {path: (answer.status_code, answer.json()) for path, answer in answers.items()} == {
        path: (400, {"cursor": ["Invalid cursor."]}) for path in answers
    }


def _forged_cursors() -> list[str]:
    """Cursors a hostile client could send: every mix of DRF's tokens (offset, reverse, position) with odd
    values, duplicated tokens, unknown ones, and strings that are not base64 of ASCII at all."""
    import base64
    import random
    from urllib.parse import urlencode

    offsets = [None, "0", "1", "5", "50", "1000", "1001", "-1", "", "x", "99999999999999999999", "1e3"]
    reverses = [None, "0", "1", "2", "", "x", "-1"]
    positions = [
        None, "", "0", "1", "-1", "x", "1.5", "\x00", "a\x00b", "99999999999999999999", "1e400", "NaN",
        "2026-01-01T00:00:00+00:00", "2026-01-01", "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00+00:00",
        "2026-01-01T00:00:00", "%00", "' OR 1=1 --", "\u00e9",
    ]  # fmt: skip
    chooser = random.Random(19)
    cursors = {_cursor(raw) for raw in ("o=50&r=1", "o=5&r=1", "r=1", "o=5", "o=1000&p=1", "p=1&p=2", "z=1", "")}
    for _ in range(40):
        tokens = [
            (name, value)
            for name, pool in (("o", offsets), ("r", reverses), ("p", positions))
            if (value := chooser.choice(pool)) is not None
        ]
        cursors.add(base64.b64encode(urlencode(tokens).encode()).decode())
    cursors |= {"%%%", "not base64!", "Zm9v=", "=", "\u00e9", "AAAA", base64.b64encode(b"\xff\xfe").decode()}
    return sorted(cursors)


def test_every_forged_cursor_on_every_list_is_a_400_or_a_page(platform_api, tenant_a_admin_api, tenant_a, monkeypatch):
    # given short lists (a handful of rows) on every list endpoint of both hosts
    from django_tenants.utils import schema_context

    from conversations import services
    from scheduler.services import outbound_message_create
    from workspace.services import canned_response_create, label_create

    monkeypatch.setattr(services, "_drain_schedule", lambda: None)  # drained here, below
    with schema_context(tenant_a.schema_name):
        application = services.application_create(name="cursors")
        for customer in ("c1", "c2", "c3"):
            services.chat_create(application=application, customer_id=customer)
        services.creations_persist(batch_size=10)
        for n in range(3):
            outbound_message_create(to=f"+62812345678{n}", content="hi")
            label_create(name=f"label-{n}")
            canned_response_create(shortcut=f"canned-{n}", body="hi")
    token = application.token
    lists = [(tenant_a_admin_api, path) for path in (
        "/api/applications", f"/api/applications/{token}/chats", f"/api/applications/{token}/chats/1/messages",
        f"/api/applications/{token}/chats/1/messages/search?q=a", "/api/chats", "/api/tickets", "/api/agents",
        "/api/queue", "/api/outbound-messages", "/api/labels", "/api/canned-responses",
    )] + [(platform_api, "/api/tenants"), (platform_api, f"/api/tenants/{tenant_a.id}/messages")]  # fmt: skip

    # when each is read with every forged cursor, one row a page (so that there is a next page)
    from urllib.parse import urlencode

    unexpected = []
    for cursor in _forged_cursors():
        for api, path in lists:
            base, _, query = path.partition("?")
            url = f"{base}?{urlencode({'limit': 1, 'cursor': cursor})}{'&' + query if query else ''}"
            response = api.get(url)
            body = response.json()
            # then: a 400 naming the cursor, or a page whose next cursor (if any) is itself accepted
            if response.status_code == 400 and body == {"cursor": ["Invalid cursor."]}:
                continue
            if response.status_code == 200 and set(body) == {"data", "next_cursor"}:
                next_cursor = body["next_cursor"]
                if next_cursor is None:
                    continue
                follow = f"{base}?{urlencode({'limit': 1, 'cursor': next_cursor})}{'&' + query if query else ''}"
                if next_cursor and api.get(follow).status_code == 200:
                    continue
            unexpected.append((path, cursor, response.status_code, body))

    assert unexpected == []
