"""Numbers under concurrency, persisted by a real worker process (no in-process drain here)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django_tenants.utils import schema_context

from core.tests.support import api_client, wait_for
from conversations.models import Application, Chat, Message
from conversations.services import application_create

THREADS = 20
PER_THREAD = 25


def _hammer(post) -> list[dict]:
    """Runs THREADS threads, each making PER_THREAD requests through `post(thread, i)`; returns the bodies."""

    def work(thread: int) -> list[dict]:
        try:
            return [post(thread, i) for i in range(PER_THREAD)]
        finally:
            connections.close_all()  # each thread had its own database connection

    with ThreadPoolExecutor(THREADS) as pool:
        return [body for bodies in pool.map(work, range(THREADS)) for body in bodies]


@pytest.mark.worker
def test_concurrent_messages_in_one_chat_are_numbered_1_to_500_and_all_persisted(celery_worker, make_live_tenant):
    # given a chat, persisted by the worker
    tenant = make_live_tenant("hammer")
    with schema_context(tenant.schema_name):
        application = application_create(name="Load")
    chats_url = f"/api/applications/{application.token}/chats"
    assert api_client(tenant=tenant).post(chats_url, {}).json() == {"number": 1}

    # when 20 threads post 25 messages each to it
    def post(thread: int, i: int) -> dict:
        response = api_client(tenant=tenant).post(f"{chats_url}/1/messages", {"body": f"t{thread}-{i}"})
        assert response.status_code == 202
        return response.json()

    answers = _hammer(post)

    # then the numbers handed out are exactly 1..500
    assert sorted(answer["number"] for answer in answers) == list(range(1, 501))
    assert {answer["chat_number"] for answer in answers} == {1}

    # and once the worker has drained the queue: 500 rows with those numbers, each body once, count 500
    def drained():
        with schema_context(tenant.schema_name):
            return Message.objects.count() == 500 and Chat.objects.get(number=1).messages_count == 500

    wait_for(drained, timeout=60, message="500 messages persisted by the worker")
    with schema_context(tenant.schema_name):
        assert sorted(Message.objects.values_list("number", flat=True)) == list(range(1, 501))
        bodies = list(Message.objects.values_list("body", flat=True))
        assert sorted(bodies) == sorted(f"t{t}-{i}" for t in range(THREADS) for i in range(PER_THREAD))


@pytest.mark.worker
def test_concurrent_chats_in_one_application_are_numbered_1_to_500_and_all_persisted(celery_worker, make_live_tenant):
    tenant = make_live_tenant("chats")
    with schema_context(tenant.schema_name):
        application = application_create(name="Load")
    chats_url = f"/api/applications/{application.token}/chats"

    def post(thread: int, i: int) -> dict:
        response = api_client(tenant=tenant).post(chats_url, {"customer_id": f"c{thread}-{i}"})
        assert response.status_code == 202
        return response.json()

    answers = _hammer(post)

    assert sorted(answer["number"] for answer in answers) == list(range(1, 501))

    def drained():
        with schema_context(tenant.schema_name):
            return Application.objects.get(id=application.id).chats_count == 500

    wait_for(drained, timeout=60, message="500 chats persisted by the worker")
    with schema_context(tenant.schema_name):
        assert sorted(Chat.objects.values_list("number", flat=True)) == list(range(1, 501))
        assert Chat.objects.values("customer_id").distinct().count() == 500


@pytest.mark.worker
def test_the_async_path_end_to_end(celery_worker, make_live_tenant):
    # POST -> 202 -> the worker persists the row -> GET shows it
    tenant = make_live_tenant("e2e")
    with schema_context(tenant.schema_name):
        application = application_create(name="E2E")
    client = api_client(tenant=tenant)
    chats_url = f"/api/applications/{application.token}/chats"

    assert client.post(chats_url, {"customer_id": "e2e"}).status_code == 202
    assert client.post(f"{chats_url}/1/messages", {"body": "through the worker"}).json() == {"chat_number": 1, "number": 1}

    message = wait_for(
        lambda: client.get(f"{chats_url}/1/messages/1").status_code == 200 and client.get(f"{chats_url}/1/messages/1").json(),
        message="the message row",
    )
    assert (message["body"], message["sender"]) == ("through the worker", "customer")
    assert client.get(f"{chats_url}/1").json()["messages_count"] == 1
    # The drain's task logs when it ends, a moment after its commit (it lingers for more records first).
    drain_line = f"[{tenant.schema_name}] celery.app.trace: Task conversations.tasks.creations_persist_task"
    wait_for(lambda: drain_line in celery_worker.log(), message="the drain task's log line, in the tenant's schema")


@pytest.mark.worker
def test_the_dispatcher_drains_creations_whose_drain_task_was_lost(celery_worker, make_live_tenant, settings):
    from conversations import services
    from tenants.tasks import tenant_work_dispatch_task

    # given creations queued while their drain task is lost (never sent)
    tenant = make_live_tenant("sweep")
    with schema_context(tenant.schema_name):
        application = application_create(name="Sweep")
        original = services._drain_schedule
        services._drain_schedule = lambda: None
        try:
            numbers = [services.chat_create(application=application) for _ in range(3)]
        finally:
            services._drain_schedule = original
    assert numbers == [1, 2, 3]

    # when the dispatcher runs once the tenant's queued creations are older than the sweep period (sent from the
    # public schema, as beat does; the period set to 0 here rather than waiting it out)
    settings.CREATIONS_SWEEP_SECONDS = 0
    tenant_work_dispatch_task.apply()

    # then the worker drains them in the tenant's schema
    def drained():
        with schema_context(tenant.schema_name):
            return Application.objects.get(id=application.id).chats_count == 3

    wait_for(drained, message="the sweep to drain the queued chats")
