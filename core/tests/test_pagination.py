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
