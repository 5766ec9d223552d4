import pytest
from django_tenants.utils import schema_context

from core.tests.support import api_client, make_user, token_for
from conversations import services
from conversations.models import Application
from core.models import User


@pytest.fixture
def drain(monkeypatch):
    """For tests inside a rolled-back transaction, where no worker process can see the rows: creations are
    drained in this process by calling the same service the task calls. `drain.scheduled` counts the drain
    tasks the requests would have sent. Flows through a real worker use `celery_worker` instead."""

    class Drain:
        scheduled = 0

        def __call__(self, tenant, batch_size: int = 1000) -> int:
            with schema_context(tenant.schema_name):
                return services.creations_persist(batch_size=batch_size)

    drainer = Drain()

    def schedule():
        drainer.scheduled += 1

    monkeypatch.setattr(services, "_drain_schedule", schedule)
    return drainer


@pytest.fixture
def application_a(tenant_a) -> Application:
    with schema_context(tenant_a.schema_name):
        return services.application_create(name="Widget A")


@pytest.fixture
def client_a(tenant_a):
    """The client API of tenant A: no user token."""
    return api_client(tenant=tenant_a)


@pytest.fixture
def agent_a(tenant_a) -> User:
    return make_user(tenant=tenant_a, role=User.Role.AGENT)


@pytest.fixture
def agent_a_api(tenant_a, agent_a):
    return api_client(tenant=tenant_a, token=token_for(agent_a, tenant=tenant_a))
