"""Attachments (issue 25): references `{"url","mime_type","size","name"}` on every path that creates a message
(the client, an agent's reply or note, the channel webhook), validated before anything is queued (the URL's host
must resolve to public addresses only), stored as given, never fetched, returned in message items and in the
message.created event."""

import json
import socket

import pytest
from django_tenants.utils import schema_context

from conversations import creations
from conversations.models import Chat, Message
from conversations.tests.factories import webhook_deliver
from events.models import Event

PNG = {"url": "https://93.184.215.14/files/a.png", "mime_type": "image/png", "size": 2048, "name": "a.png"}
PDF = {"url": "http://cdn.example.com/invoice.pdf", "mime_type": "application/pdf", "size": 0, "name": "invoice 7.pdf"}


@pytest.fixture(autouse=True)
def public_dns(monkeypatch, settings):
    """The guard on (as in production); cdn.example.com resolves to a public address, intranet.example.com to a
    private one, without asking a real resolver."""
    settings.ATTACHMENT_URL_ALLOW_PRIVATE = False
    settings.ATTACHMENT_URL_ALLOWED_HOSTS = []
    real = socket.getaddrinfo
    names = {"cdn.example.com": ["93.184.215.14"], "intranet.example.com": ["93.184.215.14", "10.0.0.7"]}

    def resolve(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in names[host]]
        if host.endswith(".invalid"):
            raise socket.gaierror("no such name")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.fixture
def chat(tenant_a, application_a, client_a, agent_a, drain):
    client_a.post(f"/api/applications/{application_a.token}/chats", {"customer_id": "c1"})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(number=1).update(assigned_agent=agent_a, status=Chat.Status.ASSIGNED)
    return f"/api/applications/{application_a.token}/chats/1"


def _pending(tenant) -> list[dict]:
    with schema_context(tenant.schema_name):
        return [record for record in creations.pending_peek(1000) if record["kind"] == "message"]


def test_client_agent_and_note_messages_carry_attachments_to_the_row_the_items_and_the_event(
    tenant_a, chat, client_a, agent_a_api, drain
):
    assert client_a.post(f"{chat}/messages", {"body": "photo", "attachments": [PNG]}).status_code == 202
    assert agent_a_api.post(f"{chat}/messages", {"body": "invoice", "attachments": [PDF, PNG]}).status_code == 202
    assert agent_a_api.post(f"{chat}/messages", {"body": "note", "private": True, "attachments": [PDF]}).status_code == 202
    drain(tenant_a)

    with schema_context(tenant_a.schema_name):
        stored = list(Message.objects.order_by("number").values_list("attachments", flat=True))
        events = {e.data["number"]: e.data["attachments"] for e in Event.objects.filter(type="message.created")}
    listed = agent_a_api.get(f"{chat}/messages").json()["data"]
    assert stored == [[PNG], [PDF, PNG], [PDF]]
    assert [message["attachments"] for message in listed] == stored
    assert client_a.get(f"{chat}/messages/1").json()["attachments"] == [PNG]
    assert events == {1: [PNG], 2: [PDF, PNG], 3: [PDF]}


def test_a_channel_webhook_delivery_carries_attachments(tenant_a, application_a, client_a, drain):
    payload = {"customer_id": "w1", "message": "see attached", "attachments": [PNG]}

    response = webhook_deliver(client_a, application_a, payload)
    drain(tenant_a)

    assert response.status_code == 202
    with schema_context(tenant_a.schema_name):
        assert list(Message.objects.values_list("sender", "attachments")) == [("customer", [PNG])]


def test_ten_attachments_are_accepted(tenant_a, chat, client_a):
    response = client_a.post(f"{chat}/messages", {"body": "many", "attachments": [PNG] * 10})

    assert response.status_code == 202
    assert _pending(tenant_a)[0]["attachments"] == [PNG] * 10


NOT_PUBLIC = 'The host "{}" resolves to a loopback, private or otherwise non-public address; attachments must be on public hosts.'
SCHEME = "Use an http:// or https:// URL with a host name."


@pytest.mark.parametrize(
    "attachment, error",
    [
        ({**PNG, "url": "ftp://93.184.215.14/a.png"}, {"url": [SCHEME]}),
        ({**PNG, "url": "file:///etc/passwd"}, {"url": [SCHEME]}),
        ({**PNG, "url": "javascript:alert(1)"}, {"url": [SCHEME]}),
        ({**PNG, "url": "https:///a.png"}, {"url": [SCHEME]}),
        ({**PNG, "url": "http://10.0.0.1/a.png"}, {"url": [NOT_PUBLIC.format("10.0.0.1")]}),
        ({**PNG, "url": "http://127.0.0.1:8000/a.png"}, {"url": [NOT_PUBLIC.format("127.0.0.1")]}),
        ({**PNG, "url": "http://169.254.169.254/latest/meta-data/"}, {"url": [NOT_PUBLIC.format("169.254.169.254")]}),
        ({**PNG, "url": "http://[::1]/a.png"}, {"url": [NOT_PUBLIC.format("::1")]}),
        ({**PNG, "url": "http://localhost/a.png"}, {"url": [NOT_PUBLIC.format("localhost")]}),
        # a name with one private address among its answers
        ({**PNG, "url": "https://intranet.example.com/a.png"}, {"url": [NOT_PUBLIC.format("intranet.example.com")]}),
        ({**PNG, "url": "https://nowhere.invalid/a.png"}, {"url": ['The host "nowhere.invalid" does not resolve.']}),
        ({**PNG, "url": "https://93.184.215.14/" + "a" * 2048}, {"url": ["Ensure this field has no more than 2048 characters."]}),
        ({**PNG, "size": -1}, {"size": ["Ensure this value is greater than or equal to 0."]}),
        ({**PNG, "size": 1.5}, {"size": ["A valid integer is required."]}),
        ({**PNG, "size": "2048"}, {"size": ["A valid integer is required."]}),
        ({**PNG, "size": 2**63}, {"size": ["Ensure this value is less than or equal to 9223372036854775807."]}),
        ({**PNG, "name": "a" * 256}, {"name": ["Ensure this field has no more than 255 characters."]}),
        ({**PNG, "name": "a\nb.png"}, {"name": ["Control characters (line breaks, tabs...) are not allowed."]}),
        ({**PNG, "name": ""}, {"name": ["This field may not be blank."]}),
        ({**PNG, "mime_type": "image"}, {"mime_type": ["Use a MIME type such as image/png."]}),
        ({**PNG, "mime_type": "image/png; x=" + "a" * 300}, {"mime_type": ["Ensure this field has no more than 255 characters.", "Use a MIME type such as image/png."]}),
        ({k: v for k, v in PNG.items() if k != "size"}, {"size": ["This field is required."]}),
        ({**PNG, "mimetype": "image/png"}, {"mimetype": ["Unknown field."]}),
        ("https://93.184.215.14/a.png", {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}),
    ],
)
def test_a_bad_attachment_is_400_on_every_path_and_queues_nothing(
    tenant_a, application_a, chat, client_a, agent_a_api, attachment, error
):
    client = client_a.post(f"{chat}/messages", {"body": "x", "attachments": [attachment]})
    agent = agent_a_api.post(f"{chat}/messages", {"body": "x", "private": True, "attachments": [PNG, attachment]})
    webhook = webhook_deliver(client_a, application_a, {"customer_id": "w1", "message": "x", "attachments": [attachment]})

    # errors by the item's index in the list
    assert (client.status_code, client.json()) == (400, {"attachments": {"0": error}})
    assert (agent.status_code, agent.json()) == (400, {"attachments": {"1": error}})
    assert (webhook.status_code, webhook.json()) == (400, {"attachments": {"0": error}})
    assert _pending(tenant_a) == []


def test_eleven_attachments_or_not_a_list_are_400(tenant_a, chat, client_a):
    eleven = client_a.post(f"{chat}/messages", {"body": "x", "attachments": [PNG] * 11})
    single = client_a.post(f"{chat}/messages", {"body": "x", "attachments": PNG})

    assert (eleven.status_code, eleven.json()) == (
        400, {"attachments": {"non_field_errors": ["Ensure this field has no more than 10 elements."]}}
    )
    assert single.status_code == 400 and "attachments" in single.json()
    assert _pending(tenant_a) == []


@pytest.mark.parametrize("raw", ['"a\\u0000b.png"', '"\\ud800.png"'])
def test_nul_and_lone_surrogates_in_an_attachment_are_400(tenant_a, chat, client_a, raw):
    body = '{"body": "x", "attachments": [{"url": "https://93.184.215.14/a", "mime_type": "image/png", "size": 1, "name": %s}]}' % raw

    response = client_a.post(f"{chat}/messages", data=body, content_type="application/json")

    assert response.status_code == 400
    assert _pending(tenant_a) == []


def test_an_allowed_internal_host_is_accepted(tenant_a, chat, client_a, settings):
    settings.ATTACHMENT_URL_ALLOWED_HOSTS = ["files.internal"]

    response = client_a.post(f"{chat}/messages", {"body": "x", "attachments": [{**PNG, "url": "https://FILES.internal/a"}]})

    assert response.status_code == 202
