import pytest
from django_tenants.utils import schema_context

from agents import services as agent_services
from agents.services import agents as agents_module
from agents.services import assignment as assignment_module
from agents.models import Agent
from core.tests.support import api_client, PASSWORD, token_for
from conversations import services as conversation_services
from conversations.models import Application


@pytest.fixture
def runs(monkeypatch):
    """Counts the assignment runs the code under test schedules, instead of sending tasks: tests inside a
    rolled-back transaction call `assignment_run` (or the task, eagerly) themselves. Flows through a real
    worker use `celery_worker` instead."""

    class Runs:
        scheduled = 0

    counter = Runs()

    def schedule():
        counter.scheduled += 1

    # Every module that calls it (the drain's new waiting chats included).
    for module in (agents_module, assignment_module, conversation_services):
        monkeypatch.setattr(module, "assignment_schedule", schedule)
    return counter


@pytest.fixture
def chats(monkeypatch):
    """`chats(tenant, application, n)`: creates n chats through the normal path (numbers from Redis, rows
    by the drain), drained in this process; returns their numbers."""
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)

    def create(tenant, application: Application, count: int, *, customer_prefix: str = "customer") -> list[int]:
        with schema_context(tenant.schema_name):
            numbers = [
                conversation_services.chat_create(application=application, customer_id=f"{customer_prefix}-{i}")
                for i in range(count)
            ]
            conversation_services.creations_persist(batch_size=1000)
        return numbers

    return create


@pytest.fixture
def application_a(tenant_a) -> Application:
    with schema_context(tenant_a.schema_name):
        return conversation_services.application_create(name="Support")


@pytest.fixture
def make_agent(tenant_a):
    """`make_agent(max_customers=2, is_online=True)`: an agent of tenant A (Agent row, user, token)."""

    def make(*, max_customers: int = 2, is_online: bool = True, role: str = "agent", email: str | None = None) -> Agent:
        with schema_context(tenant_a.schema_name):
            agent = agent_services.agent_create(
                email=email or f"agent-{Agent.objects.count() + 1}-{tenant_a.schema_name}@example.test",
                password=PASSWORD,
                name="Agent",
                role=role,
                max_customers=max_customers,
                is_online=is_online,
            )
        agent.api = api_client(tenant=tenant_a, token=token_for(agent.user, tenant=tenant_a))
        return agent

    return make
