"""Erasing a customer from the tenant admin, in a real browser (Playwright driving Debian's Chromium; the
server and browser fixtures are core/tests/test_admin_browser.py's). Screenshot: test-output/."""

import pytest
from django_tenants.utils import schema_context

from audit.models import AuditEntry
from contacts.models import Contact
from conversations import services as conversation_services
from conversations.models import Chat, Message
from core.tests.test_admin_browser import browser, log_in, page, run_action, screenshot, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_an_admin_erases_a_customer_and_the_audit_log_shows_it_without_the_customer(no_worker, make_live_tenant, server, page):  # noqa: F811
    # given two customers with a chat each (no worker here: drained in this process)
    tenant = make_live_tenant("erase")
    with schema_context(tenant.schema_name):
        application = conversation_services.application_create(name="Storefront")
        for customer in ("gone-customer-31", "kept-customer-32"):
            number = conversation_services.chat_create(application=application, customer_id=customer)
            conversation_services.message_create(application=application, chat_number=number, body=f"hello from {customer}")
        conversation_services.creations_persist(batch_size=100)
    base = server(tenant.schema_name)
    admin_email = f"admin@{tenant.schema_name}.test"

    # when the tenant admin finds the customer and runs the erase action
    log_in(page, base, admin_email)
    page.goto(f"{base}/admin/contacts/contact/?q=gone-customer-31")
    row = page.locator("#result_list tbody tr", has_text="gone-customer-31")
    row.locator("input[name=_selected_action]").check()
    run_action(page, "erase")

    # then the admin says so, the customer's data is gone and the other customer's is untouched
    assert "Erased 1 customer(s)." in page.text_content(".messagelist")
    with schema_context(tenant.schema_name):
        assert list(Contact.objects.values_list("customer_id", flat=True)) == ["kept-customer-32"]
        assert sorted(Chat.objects.values_list("customer_id", flat=True), key=lambda value: value or "") == [None, "kept-customer-32"]
        assert list(Message.objects.values_list("body", flat=True)) == ["hello from kept-customer-32"]
        entry = AuditEntry.objects.get(action="contact.erased")
        assert entry.actor == admin_email and "gone-customer-31" not in str(entry.target) + str(entry.changes)

    # and the read-only audit log lists the erasure by its actor, naming no customer
    page.goto(f"{base}/admin/audit/auditentry/")
    log_text = page.text_content("#result_list")
    assert "contact.erased" in log_text and admin_email in log_text and "gone-customer-31" not in log_text
    screenshot(page, "customer-erased")
