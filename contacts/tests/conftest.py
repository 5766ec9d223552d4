import pytest
from django_tenants.utils import schema_context

from contacts import services as contact_services
from conversations import services as conversation_services
from conversations.models import Application


@pytest.fixture
def drain(monkeypatch):
    """Drains the tenant's queued creations in this process (tests inside a rolled-back transaction: no worker
    sees their rows), by the same service the task calls; requests send no drain task."""
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)
    monkeypatch.setattr(contact_services, "_drain_send", lambda: None)

    def run(tenant) -> int:
        with schema_context(tenant.schema_name):
            return conversation_services.creations_persist(batch_size=1000)

    return run


@pytest.fixture
def application_a(tenant_a) -> Application:
    with schema_context(tenant_a.schema_name):
        return conversation_services.application_create(name="Support")
