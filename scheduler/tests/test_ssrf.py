"""The SSRF guard on the scheduler's webhook_url (core.outbound_urls): at PATCH, in the admin, and at send time.

The test settings allow private addresses (the receivers listen on loopback); each test here turns the
guard on, as production has it.
"""

import html
import socket

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from core.tests.support import host_of, make_user, PASSWORD
from core.models import User
from core.outbound_urls import OutboundUrlRefused, OutboundUrlUnresolved, outbound_url_check
from scheduler.models import OutboundMessage, SchedulerSetting
from scheduler.services import outbound_send_due, scheduler_update
from scheduler.tests.factories import make_outbound_messages

NOT_PUBLIC = (
    'The host "{host}" resolves to a loopback, private or otherwise non-public address; '
    "webhooks may only call public hosts."
)
PRIVATE_URLS = {
    "http://127.0.0.1:9/hook": "127.0.0.1",
    "http://localhost/hook": "localhost",  # a name, resolved
    "https://10.1.2.3/hook": "10.1.2.3",
    "http://192.168.0.10/hook": "192.168.0.10",
    "http://172.16.5.4:8080/hook": "172.16.5.4",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254",  # cloud metadata
    "http://100.64.0.1/hook": "100.64.0.1",  # carrier-grade NAT
    "http://0.0.0.0/hook": "0.0.0.0",
    "http://[::1]/hook": "::1",
    "http://[::ffff:127.0.0.1]/hook": "::ffff:127.0.0.1",
    "http://[fd00::1]/hook": "fd00::1",
    "http://224.0.0.1/hook": "224.0.0.1",
    "http://LocalHost:8000/hook": "localhost",
}


@pytest.fixture
def guarded(settings):
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE = False
    settings.OUTBOUND_WEBHOOK_ALLOWED_HOSTS = []
    return settings


@pytest.mark.parametrize("url, host", PRIVATE_URLS.items())
def test_patch_refuses_a_webhook_url_on_a_non_public_address(tenant_a, tenant_a_admin_api, guarded, url, host):
    response = tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": url, "batch_size": 5})

    assert response.status_code == 400
    assert response.json() == {"webhook_url": [NOT_PUBLIC.format(host=host)]}
    with schema_context(tenant_a.schema_name):
        setting = SchedulerSetting.objects.get()
    assert (setting.webhook_url, setting.batch_size) == ("", 2)  # nothing written


def test_patch_accepts_a_public_address_and_an_allowed_internal_host(tenant_a, tenant_a_admin_api, guarded):
    public = tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": "https://93.184.215.14/send"})
    guarded.OUTBOUND_WEBHOOK_ALLOWED_HOSTS = ["LocalHost"]
    allowed = tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": "http://localhost:8080/send"})

    assert public.status_code == 200 and public.json()["webhook_url"] == "https://93.184.215.14/send"
    assert allowed.status_code == 200 and allowed.json()["webhook_url"] == "http://localhost:8080/send"


def test_patch_refuses_a_host_that_does_not_resolve(tenant_a, tenant_a_admin_api, guarded):
    response = tenant_a_admin_api.patch("/api/scheduler", {"webhook_url": "https://nowhere.invalid/send"})

    assert response.status_code == 400
    assert response.json() == {"webhook_url": ['The host "nowhere.invalid" does not resolve.']}


def test_every_address_of_a_name_must_be_public(guarded, monkeypatch):
    # a name with one public and one private address (a resolver may hand out either)
    def resolve(host, port, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in ("93.184.215.14", "10.0.0.7")]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)

    with pytest.raises(OutboundUrlRefused, match="non-public"):
        outbound_url_check(url="https://mixed.example/send")


def test_the_guard_is_off_where_settings_allow_private_addresses(settings):
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE = True

    outbound_url_check(url="http://127.0.0.1:9/hook")  # no exception
    with pytest.raises(OutboundUrlRefused, match="http:// or https://"):
        outbound_url_check(url="file:///etc/passwd")


def test_the_admin_form_refuses_a_private_webhook_url(tenant_a, guarded):
    admin = make_user(tenant=tenant_a, role=User.Role.ADMIN)
    client = Client(HTTP_HOST=host_of(tenant_a))
    client.post("/admin/login/", {"username": admin.email, "password": PASSWORD})

    response = client.post(
        "/admin/scheduler/schedulersetting/1/change/",
        {"interval_seconds": 120, "batch_size": 2, "webhook_url": "http://169.254.169.254/latest/"},
    )

    assert response.status_code == 200  # the form again, with the error
    assert html.escape(NOT_PUBLIC.format(host="169.254.169.254")) in response.content.decode()
    with schema_context(tenant_a.schema_name):
        assert SchedulerSetting.objects.get().webhook_url == ""


def test_a_send_to_a_host_that_now_resolves_privately_is_refused(tenant_a, webhook_receiver, guarded):
    # given a URL accepted earlier whose host resolves to a private address now (DNS rebinding), here the
    # loopback receiver itself
    with schema_context(tenant_a.schema_name):
        SchedulerSetting.objects.update(webhook_url=webhook_receiver.url)
        (message,) = make_outbound_messages(1)

        # when the job runs
        summary = outbound_send_due()

        # then nothing was sent and the message failed, saying why
        message.refresh_from_db()
    assert webhook_receiver.received() == []
    assert summary.failed == [message.id]
    assert (message.status, message.attempts) == (OutboundMessage.Status.FAILED, 1)
    assert message.last_error == "Not sent: " + NOT_PUBLIC.format(host="127.0.0.1")


def rebinding_resolver(monkeypatch, name, answers):
    """socket.getaddrinfo answering `name` with the next address of `answers` per lookup (the last one once
    they run out), other hosts as usual."""
    real, answers = socket.getaddrinfo, list(answers)
    lookups = []

    def resolve(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return lookups


def test_a_name_rebound_between_the_check_and_the_connection_is_not_connected_to(
    tenant_a, webhook_receiver, guarded, monkeypatch
):
    # given a name that is public when checked before the request and the loopback receiver's a moment later
    port = webhook_receiver.url.split(":")[2].split("/")[0]
    lookups = rebinding_resolver(monkeypatch, "rebind.example", ["93.184.215.14", "127.0.0.1"])
    with schema_context(tenant_a.schema_name):
        SchedulerSetting.objects.update(webhook_url=f"http://rebind.example:{port}/hook")
        (message,) = make_outbound_messages(1)

        # when the job runs
        summary = outbound_send_due()

        # then the connection checked its own lookup and connected nowhere
        message.refresh_from_db()
    assert lookups == ["93.184.215.14", "127.0.0.1"]
    assert webhook_receiver.received() == []
    assert summary.failed == [message.id]
    assert (message.status, message.attempts) == (OutboundMessage.Status.FAILED, 1)
    assert message.last_error == "Not sent: " + NOT_PUBLIC.format(host="rebind.example")


def test_a_connection_goes_to_the_address_it_checked_and_names_the_host(tenant_a, webhook_receiver, guarded, monkeypatch):
    # given a name whose address passes the check (loopback taken for public here, to reach the receiver)
    port = webhook_receiver.url.split(":")[2].split("/")[0]
    lookups = rebinding_resolver(monkeypatch, "hook.example", ["127.0.0.1"])
    monkeypatch.setattr("core.outbound_urls._address_is_public", lambda address: str(address) == "127.0.0.1")
    with schema_context(tenant_a.schema_name):
        SchedulerSetting.objects.update(webhook_url=f"http://hook.example:{port}/hook")
        messages = make_outbound_messages(2)

        summary = outbound_send_due()

    # then both went out with the name in the Host header; the name was looked up before each request and
    # once per connection made (one or two: the run's sending threads may each open one)
    assert sorted(summary.sent) == sorted(message.id for message in messages)
    assert [request.headers["host"] for request in webhook_receiver.received()] == [f"hook.example:{port}"] * 2
    assert set(lookups) == {"127.0.0.1"} and len(lookups) in (3, 4)


def test_a_send_to_a_host_that_does_not_resolve_is_retried_later(tenant_a, guarded):
    with schema_context(tenant_a.schema_name):
        SchedulerSetting.objects.update(webhook_url="https://nowhere.invalid/send")
        (message,) = make_outbound_messages(1)

        summary = outbound_send_due()

        message.refresh_from_db()
    assert summary.retrying == [message.id]
    assert (message.status, message.attempts) == (OutboundMessage.Status.PENDING, 1)
    assert message.last_error == 'The host "nowhere.invalid" does not resolve.'


def test_sends_go_out_when_the_guard_allows_them(tenant_a, webhook_receiver, guarded):
    guarded.OUTBOUND_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    with schema_context(tenant_a.schema_name):
        scheduler_update(webhook_url=webhook_receiver.url)
        (message,) = make_outbound_messages(1)

        summary = outbound_send_due()

    assert summary.sent == [message.id]
    assert len(webhook_receiver.received()) == 1


def test_unresolved_is_a_kind_of_refusal():
    # callers that only care whether a URL may be used catch OutboundUrlRefused
    assert issubclass(OutboundUrlUnresolved, OutboundUrlRefused)
