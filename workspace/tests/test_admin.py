"""The tenant admin's workspace pages: labels and canned responses, and a chat's labels and private notes."""

from django.test import Client
from django_tenants.utils import schema_context

from conversations.models import Chat, Message
from core.models import User
from core.tests.support import PASSWORD, host_of, make_user
from conversations.services import application_create
from workspace.models import ChatLabel
from workspace.services import canned_response_create, label_create


def test_the_chat_page_marks_private_notes_and_lists_labels(tenant_a):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    with schema_context(tenant_a.schema_name):
        application = application_create(name="Admin A")
        chat = Chat.objects.create(application=application, number=1, customer_id="c1")
        Message.objects.create(chat=chat, number=1, body="customer wrote", sender=Message.Sender.CUSTOMER)
        Message.objects.create(chat=chat, number=2, body="internal only", sender=Message.Sender.AGENT, is_private=True)
        vip = label_create(name="vip")
        ChatLabel.objects.create(chat=chat, label=vip)
        canned_response_create(shortcut="hello", body="Hi {{customer_id}}")
    client = Client(HTTP_HOST=host_of(tenant_a))
    assert client.post("/admin/login/", {"username": admin.email, "password": PASSWORD, "next": "/admin/"}).status_code == 302

    page = client.get(f"/admin/conversations/chat/{chat.id}/change/")
    listing = client.get("/admin/conversations/chat/", {"chat_labels__label__id__exact": vip.id})
    labels_page = client.get("/admin/workspace/label/")
    canned_page = client.get("/admin/workspace/cannedresponse/", {"q": "hello"})

    assert page.status_code == 200
    messages = {form.instance.number: form for form in page.context["inline_admin_formsets"][0].formset.forms}
    assert (messages[1].instance.is_private, messages[2].instance.is_private) == (False, True)
    assert "private note" in page.content.decode().lower()  # the column that marks them
    assert page.context["original"].label_names == ["vip"]  # shown read-only: labels change through the API
    assert listing.status_code == 200 and [c.number for c in listing.context["cl"].result_list] == [1]
    assert listing.context["cl"].result_list[0].label_names == ["vip"]
    assert labels_page.status_code == 200 and "vip" in labels_page.content.decode()
    assert canned_page.status_code == 200 and "hello" in canned_page.content.decode()
