"""The audit log and contacts in the tenant admin: the log read-only, an admin action's actor is the signed-in
admin, and erasure through the contacts' action."""

from django.test import Client
from django_tenants.utils import schema_context

from audit.models import AuditEntry
from contacts.models import Contact
from contacts import services as contact_services
from conversations import services as conversation_services
from core.models import User
from core.tests.support import PASSWORD, host_of, make_user
from scheduler.models import SchedulerSetting


def _signed_in(tenant) -> tuple[Client, User]:
    admin = make_user(tenant=tenant, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant))
    assert client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"}).status_code == 302
    return client, admin


def test_the_audit_log_is_read_only_in_the_admin(tenant_a):
    client, admin = _signed_in(tenant_a)
    with schema_context(tenant_a.schema_name):
        entry = AuditEntry.objects.create(actor="someone@example.test", action="chat.resolved", target="chat t/1")
    listing = client.get("/admin/audit/auditentry/", {"action": "chat.resolved"})
    assert listing.status_code == 200
    assert b"someone@example.test" in listing.content
    assert client.get(f"/admin/audit/auditentry/{entry.pk}/change/").status_code == 200  # a read-only view
    assert client.post(f"/admin/audit/auditentry/{entry.pk}/change/", {"actor": "x"}).status_code == 403
    assert client.get("/admin/audit/auditentry/add/").status_code == 403
    assert client.post(f"/admin/audit/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    with schema_context(tenant_a.schema_name):
        assert AuditEntry.objects.get(pk=entry.pk).actor == "someone@example.test"


def test_an_admin_action_is_recorded_with_the_signed_in_admin(tenant_a, monkeypatch):
    client, admin = _signed_in(tenant_a)
    # the scheduler's admin page: stop it through its action
    response = client.post("/admin/scheduler/schedulersetting/", {"action": "stop", "_selected_action": [str(SchedulerSetting.SINGLETON_ID)]})
    with schema_context(tenant_a.schema_name):
        entries = list(AuditEntry.objects.values_list("actor", "action"))
    assert response.status_code in (200, 302)
    assert entries == [(admin.email, "scheduler.stopped")], entries


def test_erasure_through_the_contacts_admin_action(tenant_a, monkeypatch):
    monkeypatch.setattr(conversation_services, "_drain_schedule", lambda: None)
    monkeypatch.setattr(contact_services, "_drain_send", lambda: None)
    client, admin = _signed_in(tenant_a)
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="Web")
        conversation_services.chat_create(application=application, customer_id="admin-erase-1")
        conversation_services.creations_persist(batch_size=100)
        contact = Contact.objects.get(customer_id="admin-erase-1")
    assert client.get("/admin/contacts/contact/", {"q": "admin-erase"}).status_code == 200
    response = client.post("/admin/contacts/contact/", {"action": "erase", "_selected_action": [str(contact.pk)]})
    assert response.status_code == 302
    with schema_context(tenant_a.schema_name):
        assert not Contact.objects.filter(customer_id="admin-erase-1").exists()
        assert list(AuditEntry.objects.values_list("actor", "action")) == [(admin.email, "contact.erased")]
