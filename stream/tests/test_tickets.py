"""Stream tickets: made for tenant staff, single use, 60 s, only on their own tenant."""

from datetime import timedelta
from unittest import mock

from django.utils import timezone

from core.models import User
from core.redis import get_redis
from core.tests.support import api_client, make_user, token_for
from stream import services
from stream.services import StreamViewer, stream_ticket_consume


def _ticket(tenant, role=User.Role.AGENT) -> tuple[User, dict]:
    user = make_user(tenant=tenant, role=role)
    response = api_client(tenant=tenant, token=token_for(user, tenant=tenant)).post("/api/stream/ticket")
    assert response.status_code == 201, response.content
    return user, response.json()


def test_an_agent_and_an_admin_get_a_ticket_valid_60_seconds(tenant_a):
    for role in (User.Role.AGENT, User.Role.ADMIN):
        before = timezone.now()
        user, body = _ticket(tenant_a, role)
        assert set(body) == {"ticket", "expires_at"}
        expires_at = timezone.datetime.fromisoformat(body["expires_at"])
        assert before + timedelta(seconds=60) <= expires_at <= timezone.now() + timedelta(seconds=60)
        assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"]) == StreamViewer(user.pk, role)


def test_no_ticket_without_a_staff_token(tenant_a):
    assert api_client(tenant=tenant_a).post("/api/stream/ticket").status_code == 401
    assert get_redis().keys("sociomile:*:stream:ticket:*") == []


def test_a_ticket_is_single_use(tenant_a):
    user, body = _ticket(tenant_a)
    assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"]) == StreamViewer(user.pk, "agent")
    assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"]) is None


def test_a_ticket_expires_after_60_seconds(tenant_a):
    # given a ticket, and a clock moved to its expiry (Redis still holds the key: its TTL is only the cleanup)
    _user, body = _ticket(tenant_a)
    later = timezone.now() + timedelta(seconds=60)
    with mock.patch.object(services.timezone, "now", return_value=later):
        assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"]) is None
    # and it is spent: the clock moved back does not revive it
    assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"]) is None


def test_a_ticket_just_before_expiry_still_opens(tenant_a):
    user, body = _ticket(tenant_a)
    almost = timezone.now() + timedelta(seconds=59)
    with mock.patch.object(services.timezone, "now", return_value=almost):
        assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"]) == StreamViewer(user.pk, "agent")


def test_another_tenants_ticket_is_refused_and_stays_unspent_for_its_own_tenant(tenant_a, tenant_b):
    user, body = _ticket(tenant_a)
    assert stream_ticket_consume(schema_name=tenant_b.schema_name, ticket=body["ticket"]) is None
    assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"]) == StreamViewer(user.pk, "agent")


def test_garbage_tickets_are_refused(tenant_a):
    for ticket in ("", "x" * 101, "*", "nope"):
        assert stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=ticket) is None


def test_a_ticket_raced_by_many_connections_opens_exactly_one_stream(tenant_a):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    # given one ticket and 16 connections presenting it at the same moment
    user, body = _ticket(tenant_a)
    barrier = Barrier(16)

    def consume(_index):
        barrier.wait()
        return stream_ticket_consume(schema_name=tenant_a.schema_name, ticket=body["ticket"])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(consume, range(16)))

    # then one of them gets the viewer, the 15 others nothing
    assert [result for result in results if result is not None] == [StreamViewer(user.pk, "agent")]
