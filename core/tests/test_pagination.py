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

    monkeypatch.setattr(services, "_schedule_drain", lambda: None)  # drained here, below
    with schema_context(tenant_a.schema_name):
        application = services.application_create(name="cursors")
        services.chat_create(application=application)
        services.creations_persist(batch_size=10)
    token = application.token
    tenant_lists = [
        "/api/applications", f"/api/applications/{token}/chats", f"/api/applications/{token}/chats/1/messages",
        "/api/chats", "/api/tickets", "/api/agents", "/api/outbound-messages",
    ]  # fmt: skip
    cursor = _cursor(f"p={position}")

    answers = {path: tenant_a_admin_api.get(path, {"cursor": cursor}) for path in tenant_lists}
    answers["/api/tenants"] = platform_api.get("/api/tenants", {"cursor": cursor})

    assert {path: (answer.status_code, answer.json()) for path, answer in answers.items()} == {
        path: (400, {"cursor": ["Invalid cursor."]}) for path in answers
    }
