"""A private note in the tenant admin, in a real browser (Playwright driving Debian's Chromium; the server and
browser fixtures are core/tests/test_admin_browser.py's). Screenshot: test-output/."""

import pytest
from django_tenants.utils import schema_context

from agents import services as agent_services
from conversations import services as conversation_services
from conversations.models import Chat
from core.tests.support import PASSWORD
from core.tests.test_admin_browser import browser, log_in, page, screenshot, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_the_chat_page_marks_the_private_note_and_not_the_customers_message(no_worker, make_live_tenant, server, page):  # noqa: F811
    # given a chat with a customer message, an agent's reply and a private note with an attachment (no worker
    # here: drained in this process)
    tenant = make_live_tenant("notes")
    attachment = {"url": "https://files.example.com/refund.pdf", "mime_type": "application/pdf", "size": 2048, "name": "refund.pdf"}
    with schema_context(tenant.schema_name):
        agent = agent_services.agent_create(email=f"ana@{tenant.schema_name}.test", password=PASSWORD, name="Ana", max_customers=2, is_online=False)
        application = conversation_services.application_create(name="Storefront")
        number = conversation_services.chat_create(application=application, customer_id="customer-7")
        common = {"application": application, "chat_number": number}
        conversation_services.message_create(**common, body="Where is my refund?")
        conversation_services.message_create(**common, body="Looking into it.", sender="agent", author=agent.user)
        conversation_services.message_create(
            **common, body="VIP: refund approved by finance", sender="agent", author=agent.user, is_private=True,
            attachments=[attachment],
        )  # fmt: skip
        conversation_services.creations_persist(batch_size=100)
        chat = Chat.objects.get(number=number)
    base = server(tenant.schema_name)

    # when the tenant admin opens the chat
    log_in(page, base, f"admin@{tenant.schema_name}.test")
    page.goto(f"{base}/admin/conversations/chat/{chat.pk}/change/")

    # then each message row says whether it is a private note, and the note shows its attachment
    rows = page.locator("tr.form-row", has=page.locator("td.field-private_note"))
    marks = {}
    for index in range(rows.count()):
        row = rows.nth(index)
        body = row.locator("td.field-body").inner_text().strip() or row.locator("td.field-body textarea").input_value()
        marks[body] = row.locator("td.field-private_note img").get_attribute("alt")
    assert marks == {"Where is my refund?": "False", "Looking into it.": "False", "VIP: refund approved by finance": "True"}
    note_row = rows.filter(has=page.locator("td.field-private_note img[alt=True]"))
    assert "refund.pdf" in note_row.locator("td.field-attachments").inner_text()
    screenshot(page, "chat-private-note")
