"""Erasure while the customer and another customer keep writing, persisted by a real worker process: nothing of
the customer's erased chats survives, and nothing anyone else sent is lost."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django_tenants.utils import schema_context

from contacts.models import Contact
from conversations import creations
from conversations.models import Chat, Message
from conversations.services import application_create
from conversations.tests.factories import webhook_deliver
from core.models import User
from core.tests.support import api_client, make_user, token_for, wait_for

SUBJECT = "erase-me-race"
OTHER = "keep-me-race"
THREADS = 4
PER_THREAD = 40


@pytest.mark.worker
def test_erasure_during_a_stream_of_messages_keeps_nothing_of_the_erased_chats_and_loses_nothing_else(celery_worker, make_live_tenant):
    tenant = make_live_tenant("erase")
    with schema_context(tenant.schema_name):
        application = application_create(name="Channel")
    admin = api_client(tenant=tenant, token=token_for(make_user(tenant=tenant, role=User.Role.ADMIN), tenant=tenant))
    client = api_client(tenant=tenant)
    for customer in (SUBJECT, OTHER):
        assert webhook_deliver(client, application, {"customer_id": customer, "message": "first"}).status_code == 202

    def persisted():
        with schema_context(tenant.schema_name):
            return Contact.objects.filter(customer_id__in=[SUBJECT, OTHER]).count() == 2

    wait_for(persisted, timeout=60, message="both customers' first chats persisted")
    with schema_context(tenant.schema_name):
        erased_chat = Chat.objects.get(customer_id=SUBJECT)

    # when threads keep delivering messages of both customers while an admin erases one of them
    started = threading.Event()

    def work(thread: int) -> list[tuple[str, dict]]:
        answers = []
        try:
            for i in range(PER_THREAD):
                customer = SUBJECT if i % 2 else OTHER
                payload = {"customer_id": customer, "message": f"{customer} t{thread}-{i}", "external_id": f"{thread}-{i}"}
                response = webhook_deliver(api_client(tenant=tenant), application, payload)
                assert response.status_code == 202, response.content
                answers.append((customer, response.json()))
                if i == 3:
                    started.set()
        finally:
            connections.close_all()
        return answers

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(work, thread) for thread in range(THREADS)]
        started.wait(30)
        while True:  # 409 while a drain batch holds the lock past the wait: the client retries
            response = admin.delete(f"/api/contacts/{SUBJECT}")
            if response.status_code != 409:
                break
            time.sleep(0.2)
        assert response.status_code == 204, response.content
        answers = [answer for future in futures for answer in future.result()]

    def drained():
        with schema_context(tenant.schema_name):
            return creations.pending_count() == 0 and not Message.objects.filter(chat__customer_id=OTHER).count() < 1 + PER_THREAD * THREADS // 2

    wait_for(drained, timeout=90, message="the queue drained")
    with schema_context(tenant.schema_name):
        # nothing the customer sent is left in the chat that was erased
        assert not Message.objects.filter(chat=erased_chat, sender="customer").exists()
        erased_chat.refresh_from_db()
        assert erased_chat.customer_id is None
        assert erased_chat.messages_count == Message.objects.filter(chat=erased_chat).count() == 0
        # the other customer's messages: every one accepted, once
        other_bodies = sorted(Message.objects.filter(chat__customer_id=OTHER).values_list("body", flat=True))
        assert other_bodies == sorted(["first"] + [f"{OTHER} t{t}-{i}" for t in range(THREADS) for i in range(0, PER_THREAD, 2)])
        # the customer's messages accepted into a new chat (after the erasure) are all there, nothing else of them
        later = sorted(
            (answer["chat_number"], answer["message_number"]) for customer, answer in answers
            if customer == SUBJECT and answer["chat_number"] != erased_chat.number
        )  # fmt: skip
        kept = sorted(Message.objects.filter(chat__customer_id=SUBJECT).values_list("chat__number", "number"))
        assert kept == later
        assert Contact.objects.filter(customer_id=SUBJECT).count() == (1 if later else 0)
