import pytest

from core.tests.support import api_client, make_user, PASSWORD, token_for
from core.models import User


def test_tenant_user_signs_in_on_its_host_and_gets_its_role(tenant_a):
    # given
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT, email="Agent.One@Example.test")

    # when
    response = api_client(tenant=tenant_a).post("/api/auth/token", {"email": "agent.one@example.test", "password": PASSWORD})

    # then
    assert response.status_code == 200
    assert response.json() == {"token": token_for(agent, tenant=tenant_a), "role": "agent"}


def test_platform_admin_signs_in_on_the_platform_host(db):
    admin = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN, email="root@example.test")

    response = api_client().post("/api/auth/token", {"email": "root@example.test", "password": PASSWORD})

    assert response.status_code == 200
    assert response.json() == {"token": token_for(admin, tenant=None), "role": "platform_admin"}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "admin@alpha.test", "password": "wrong-password"},
        {"email": "nobody@alpha.test", "password": PASSWORD},
    ],
)
def test_wrong_credentials_are_a_400_and_no_token_is_made(tenant_a, body):
    from django_tenants.utils import schema_context
    from rest_framework.authtoken.models import Token

    response = api_client(tenant=tenant_a).post("/api/auth/token", body)

    assert response.status_code == 400
    assert response.json() == {"detail": "Unable to sign in with the provided email and password."}
    with schema_context(tenant_a.schema_name):
        assert Token.objects.count() == 0


def test_missing_fields_are_named(tenant_a):
    response = api_client(tenant=tenant_a).post("/api/auth/token", {"email": "not-an-email"})

    assert response.status_code == 400
    assert set(response.json()) == {"email", "password"}


def test_an_account_of_tenant_a_cannot_sign_in_on_tenant_b(tenant_a, tenant_b):
    # The first admin of each tenant was made at provisioning; alpha's email does not exist in beta.
    response = api_client(tenant=tenant_b).post("/api/auth/token", {"email": "admin@alpha.test", "password": PASSWORD})

    assert response.status_code == 400


def test_tokens_never_cross_hosts(tenant_a, tenant_b):
    # given a token for an admin of tenant A
    token = token_for(make_user(tenant=tenant_a, role=User.Role.ADMIN), tenant=tenant_a)

    # then it works on its own host only: refused on tenant B's host and on the platform API
    assert api_client(tenant=tenant_a, token=token).get("/api/auth/me").status_code == 200
    assert api_client(tenant=tenant_b, token=token).get("/api/auth/me").status_code == 401
    assert api_client(token=token).get("/api/tenants").status_code == 401
    # and a platform admin's token is refused on a tenant host
    platform_token = token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN), tenant=None)
    assert api_client(token=platform_token).get("/api/auth/me").json()["role"] == "platform_admin"
    assert api_client(tenant=tenant_a, token=platform_token).get("/api/auth/me").status_code == 401


def test_requests_without_a_token_are_401(tenant_a):
    response = api_client(tenant=tenant_a).get("/api/auth/me")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_signing_out_revokes_the_token_and_the_next_sign_in_makes_a_new_one(tenant_a):
    # given an agent signed in
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    token = token_for(agent, tenant=tenant_a)

    # when it signs out
    response = api_client(tenant=tenant_a, token=token).delete("/api/auth/token")

    # then the token is refused from then on, and signing in again gives a new one that works
    assert response.status_code == 204
    assert response.content == b""
    assert api_client(tenant=tenant_a, token=token).get("/api/auth/me").status_code == 401
    signed_in = api_client(tenant=tenant_a).post("/api/auth/token", {"email": agent.email, "password": PASSWORD})
    assert signed_in.status_code == 200
    assert signed_in.json()["token"] != token
    assert api_client(tenant=tenant_a, token=signed_in.json()["token"]).get("/api/auth/me").status_code == 200


def test_signing_out_needs_a_token_of_this_host_and_touches_no_other_host(tenant_a, tenant_b):
    # given the same email signed in on tenant A, on tenant B and on the platform host
    email = "same.person@example.test"
    token_a = token_for(make_user(tenant=tenant_a, role=User.Role.ADMIN, email=email), tenant=tenant_a)
    token_b = token_for(make_user(tenant=tenant_b, role=User.Role.ADMIN, email=email), tenant=tenant_b)
    platform = token_for(make_user(tenant=None, role=User.Role.PLATFORM_ADMIN, email=email), tenant=None)

    # when B's token or no token at all tries to sign out on A
    assert api_client(tenant=tenant_a).delete("/api/auth/token").status_code == 401
    assert api_client(tenant=tenant_a, token=token_b).delete("/api/auth/token").status_code == 401

    # then nothing was revoked; and signing out on A leaves B and the platform host signed in
    assert api_client(tenant=tenant_a, token=token_a).get("/api/auth/me").status_code == 200
    assert api_client(tenant=tenant_a, token=token_a).delete("/api/auth/token").status_code == 204
    assert api_client(tenant=tenant_a, token=token_a).get("/api/auth/me").status_code == 401
    assert api_client(tenant=tenant_b, token=token_b).get("/api/auth/me").status_code == 200
    assert api_client(token=platform).get("/api/auth/me").status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "", "Token", "Token {key} extra", "Token not-a-key", "Bearer {key}", "token {key}", "Token {key}", "Token caf\u00e9"],
)
def test_token_authentication_answers_as_drfs_own(tenant_a, header):
    # core.authentication.TokenAuthentication answers a request without the header itself; every request
    # must get DRF's answer: the same user and token, the same refusal, or none.
    from django_tenants.utils import schema_context
    from rest_framework.authentication import TokenAuthentication as DrfTokenAuthentication
    from rest_framework.exceptions import AuthenticationFailed
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from core.authentication import TokenAuthentication

    key = token_for(make_user(tenant=tenant_a, role=User.Role.AGENT), tenant=tenant_a)

    def outcome(authentication_class):
        extra = {} if header is None else {"HTTP_AUTHORIZATION": header.format(key=key)}
        request = Request(APIRequestFactory().post("/api/chats", {}, format="json", **extra))
        try:
            with schema_context(tenant_a.schema_name):
                result = authentication_class().authenticate(request)
        except AuthenticationFailed as error:
            return "refused", str(error.detail)
        return None if result is None else (result[0].pk, result[1].key)

    assert outcome(TokenAuthentication) == outcome(DrfTokenAuthentication)


def test_a_request_without_a_token_is_answered_without_building_its_headers(db):
    # The point of core.authentication: `request.headers` (a dict of every header) is not built for a client
    # request that carries no token.
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from core.authentication import TokenAuthentication

    request = Request(APIRequestFactory().post("/api/chats", {}, format="json", HTTP_X_REQUEST_ID="abc"))

    assert TokenAuthentication().authenticate(request) is None
    assert "headers" not in request._request.__dict__


@pytest.mark.parametrize("header", ["Token \x00", "Token a\x00b", "Token " + "\x00" * 40])
@pytest.mark.parametrize("path", ["/api/chats", "/api/auth/me"])
def test_a_token_holding_a_nul_is_refused_as_an_invalid_token_not_looked_up(tenant_a, header, path):
    # DRF looked the key up as it came: PostgreSQL refuses NUL in text, so the lookup was a DataError, a 500
    # (found by a hostile probe; a WSGI server or proxy that passes the byte through lets it reach Django)
    response = api_client(tenant=tenant_a).generic("GET", path, HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}
