"""The workspace's uniqueness under concurrency: the database's unique indexes decide, so requests at the same
moment (committed data, separate connections) add a label to a chat once, create one label of a name and one
canned response of a shortcut, and the losers get a 409, never a 500 or a duplicate."""

import threading

from django.db import connection, connections
from django_tenants.utils import schema_context

from conversations.models import Application, Chat
from core.exceptions import Conflict
from core.models import User
from workspace.models import CannedResponse, ChatLabel, Label
from workspace.services import canned_response_create, chat_label_add, label_create


def _at_once(tenant, work, count: int = 6) -> list:
    """Runs work() in `count` threads released together, each on its own connection; returns their outcomes."""
    barrier = threading.Barrier(count)
    outcomes = [None] * count

    def run(index):
        try:
            with schema_context(tenant.schema_name):
                barrier.wait()
                outcomes[index] = work()
        except Exception as error:  # noqa: BLE001 (the outcome under test)
            outcomes[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_writes_keep_every_uniqueness(make_live_tenant):
    tenant = make_live_tenant("labels")
    with schema_context(tenant.schema_name):
        admin = User.objects.get(role=User.Role.ADMIN)
        application = Application.objects.create(name="A")
        chat = Chat.objects.create(application=application, number=1, customer_id="c1")
        label = label_create(name="vip")

    added = _at_once(tenant, lambda: chat_label_add(chat=chat, label=label, user=admin))
    labels = _at_once(tenant, lambda: label_create(name="Refund"))
    canned = _at_once(tenant, lambda: canned_response_create(shortcut="hello", body="Hi"))
    connection.set_schema_to_public()

    assert added == [None] * 6
    assert sum(isinstance(outcome, Label) for outcome in labels) == 1
    assert all(isinstance(outcome, (Label, Conflict)) for outcome in labels)
    assert sum(isinstance(outcome, CannedResponse) for outcome in canned) == 1
    assert all(isinstance(outcome, (CannedResponse, Conflict)) for outcome in canned)
    with schema_context(tenant.schema_name):
        assert ChatLabel.objects.filter(chat=chat, label=label).count() == 1
        assert Label.objects.filter(name__iexact="refund").count() == 1
        assert CannedResponse.objects.filter(shortcut="hello").count() == 1
