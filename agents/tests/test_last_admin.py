"""A tenant never loses its last active admin: demoting, deactivating or deleting it is a 409 (API) or a
refusal on the tenant admin's page, also when two admins demote each other at the same moment."""

import threading

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django_tenants.utils import schema_context

from agents.services import agent_for_user, agent_update
from core.tests.support import PASSWORD, api_client, host_of, make_user, token_for
from core.exceptions import Conflict
from core.models import User


def _admins(tenant) -> list[str]:
    with schema_context(tenant.schema_name):
        return sorted(User.objects.filter(role=User.Role.ADMIN, is_active=True).values_list("email", flat=True))


@pytest.fixture
def only_admin(tenant_a, tenant_a_admin, tenant_a_admin_api):
    """tenant_a_admin is the tenant's only active admin: the session tenant's first admin is made an agent."""
    with schema_context(tenant_a.schema_name):
        User.objects.filter(role=User.Role.ADMIN).exclude(id=tenant_a_admin.id).update(role=User.Role.AGENT)
    return tenant_a_admin


def test_the_last_active_admin_cannot_be_demoted_through_the_api(tenant_a, only_admin, tenant_a_admin_api):
    response = tenant_a_admin_api.patch(f"/api/agents/{only_admin.id}", {"role": "agent"})

    assert response.status_code == 409
    assert "last active admin" in response.json()["detail"]
    assert _admins(tenant_a) == [only_admin.email]


def test_an_admin_may_be_demoted_while_another_remains(tenant_a, only_admin, tenant_a_admin_api):
    second = make_user(tenant=tenant_a, role=User.Role.ADMIN)

    assert tenant_a_admin_api.patch(f"/api/agents/{second.id}", {"role": "agent"}).status_code == 200
    assert tenant_a_admin_api.patch(f"/api/agents/{only_admin.id}", {"role": "agent"}).status_code == 409
    # an inactive admin does not count as one
    inactive = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    with schema_context(tenant_a.schema_name):
        User.objects.filter(id=inactive.id).update(is_active=False)
    assert tenant_a_admin_api.patch(f"/api/agents/{only_admin.id}", {"role": "agent"}).status_code == 409
    assert _admins(tenant_a) == [only_admin.email]


@pytest.fixture
def tenant_admin_site(tenant_a, only_admin) -> Client:
    client = Client(HTTP_HOST=host_of(tenant_a))
    signed_in = client.post("/admin/login/", {"username": only_admin.email, "password": PASSWORD, "next": "/admin/"})
    assert signed_in.status_code == 302
    return client


def _user_form(user: User, **changes) -> dict:
    data = {"email": user.email, "name": user.name, "role": user.role, "is_active": "on", "is_staff": "on",
            "is_superuser": "on", "last_login_0": "", "last_login_1": "", "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00"}  # fmt: skip
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


@pytest.mark.parametrize("changes", [{"role": "agent"}, {"is_active": None}], ids=["demoted", "deactivated"])
def test_the_tenant_admin_site_refuses_to_demote_or_deactivate_the_last_admin(tenant_a, only_admin, tenant_admin_site, changes):
    response = tenant_admin_site.post(f"/admin/core/user/{only_admin.id}/change/", _user_form(only_admin, **changes), follow=True)

    assert response.status_code == 200
    assert "last active admin" in response.content.decode()
    assert _admins(tenant_a) == [only_admin.email]


def test_the_tenant_admin_site_refuses_to_delete_the_last_admin(tenant_a, only_admin, tenant_admin_site):
    one = tenant_admin_site.post(f"/admin/core/user/{only_admin.id}/delete/", {"post": "yes"}, follow=True)
    bulk = tenant_admin_site.post(
        "/admin/core/user/", {"action": "delete_selected", "_selected_action": [only_admin.id], "post": "yes"}, follow=True
    )

    assert "last active admin" in one.content.decode()
    assert "last active admin" in bulk.content.decode()
    assert _admins(tenant_a) == [only_admin.email]


def test_a_demotion_waits_for_a_concurrent_one_and_is_then_refused(make_live_tenant):
    # given two active admins, and admin 1's demotion of admin 2 made but not yet committed
    tenant = make_live_tenant("lastadmin")
    with schema_context(tenant.schema_name):
        first = User.objects.get(role=User.Role.ADMIN)
    second = make_user(tenant=tenant, role=User.Role.ADMIN)
    connection.set_schema_to_public()
    demoted, release = threading.Event(), threading.Event()
    outcome = {}

    def demote(target: int, *, hold: bool):
        try:
            with schema_context(tenant.schema_name), transaction.atomic():
                agent_update(agent=agent_for_user(user=User.objects.get(id=target)), role=User.Role.AGENT)
                if hold:
                    demoted.set()
                    release.wait(10)
            outcome[target] = "demoted"
        except Conflict:
            outcome[target] = "refused"
        finally:
            connections.close_all()

    holder = threading.Thread(target=demote, args=(second.id,), kwargs={"hold": True})
    holder.start()
    assert demoted.wait(10)
    # when admin 2 demotes admin 1 meanwhile (it reads 2 admins in its snapshot: only a lock can stop it)
    other = threading.Thread(target=demote, args=(first.id,), kwargs={"hold": False})
    other.start()
    other.join(0.5)
    waited = other.is_alive()
    release.set()
    holder.join()
    other.join()

    # then it waited for the first demotion, and was refused once it committed
    assert waited
    assert outcome == {second.id: "demoted", first.id: "refused"}
    assert _admins(tenant) == [first.email]


def test_two_admins_demoting_each_other_at_once_leave_one(make_live_tenant):
    # given a tenant with exactly two active admins (committed: each request runs on its own connection)
    tenant = make_live_tenant("lastadmin")
    with schema_context(tenant.schema_name):
        first = User.objects.get(role=User.Role.ADMIN)
    second = make_user(tenant=tenant, role=User.Role.ADMIN)
    connection.set_schema_to_public()
    apis = {user.id: api_client(tenant=tenant, token=token_for(user, tenant=tenant)) for user in (first, second)}

    for _round in range(5):
        # when each demotes the other at the same moment
        barrier = threading.Barrier(2)
        answers: dict[int, int] = {}

        def demote(actor: int, target: int):
            try:
                barrier.wait()
                answers[actor] = apis[actor].patch(f"/api/agents/{target}", {"role": "agent"}).status_code
            finally:
                connections.close_all()

        threads = [
            threading.Thread(target=demote, args=(first.id, second.id)),
            threading.Thread(target=demote, args=(second.id, first.id)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # then one demotion won and the other was refused: 409 if both were admins when they started, 403 if
        # the loser's request was authenticated after it had been demoted. One admin is left.
        assert sorted(answers.values()) in ([200, 403], [200, 409])
        assert len(_admins(tenant)) == 1
        connection.set_schema_to_public()
        with schema_context(tenant.schema_name):  # both admins again for the next round
            User.objects.filter(id__in=[first.id, second.id]).update(role=User.Role.ADMIN, is_staff=True, is_superuser=True)
        connection.set_schema_to_public()
