from django.test import Client

from core.tests.support import host_of, make_user, PASSWORD
from core.models import User


def test_platform_admin_signs_in_to_the_platform_admin(db):
    admin = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    client = Client(HTTP_HOST=host_of(None))

    assert client.login(email=admin.email, password=PASSWORD)
    response = client.get("/admin/")

    assert response.status_code == 200
    assert b"Tenants" in response.content
    assert b"Periodic tasks" in response.content


def test_tenant_admin_sees_its_own_admin_without_platform_models(tenant_a):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant_a))
    response = client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302

    index = client.get("/admin/")

    assert index.status_code == 200
    assert b"Users" in index.content
    assert b"Tenants" not in index.content
    assert b"Periodic tasks" not in index.content


def test_agents_cannot_use_the_tenant_admin(tenant_a):
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    client = Client(HTTP_HOST=host_of(tenant_a))

    client.post("/admin/login/", {"username": agent.email, "password": PASSWORD, "next": "/admin/"})

    assert client.get("/admin/").status_code == 302  # back to the login page


def test_a_platform_admin_can_be_deleted_from_the_platform_admin(db):
    # Users are pointed at by tenant-only tables (chats, messages); deleting from the public schema must
    # not try to touch them.
    operator = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    doomed = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    client = Client(HTTP_HOST=host_of(None))
    client.login(email=operator.email, password=PASSWORD)

    response = client.post(f"/admin/core/user/{doomed.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(pk=doomed.pk).exists()
    assert User.objects.filter(pk=operator.pk).exists()


def test_an_api_request_never_builds_the_admins_message_storage(tenant_a):
    # core.middleware.LazyMessageMiddleware: the storage is built when the admin uses messages, not per request.
    from django.utils.functional import empty
    from django_tenants.utils import schema_context

    from conversations.services import application_create
    from core.tests.support import api_client

    with schema_context(tenant_a.schema_name):
        application = application_create(name="lazy messages")
    # a read: a create would send a drain task to the tenant's queue, which no worker here consumes
    response = api_client(tenant=tenant_a).get(f"/api/applications/{application.token}/chats")

    assert response.status_code == 200
    assert response.wsgi_request._messages._wrapped is empty
    assert "messages" not in response.cookies


def test_an_admin_message_is_stored_across_the_redirect_and_shown_once(tenant_a):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant_a))
    assert client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"}).status_code == 302

    added = client.post("/admin/conversations/application/add/", {"name": "From the admin"})
    shown = client.get(added["Location"])
    again = client.get(added["Location"])

    assert added.status_code == 302 and added.cookies["messages"].value
    assert b"was added successfully" in shown.content
    assert b"was added successfully" not in again.content
