"""The assignment's wait for /metrics (tenants.metrics.on_chats_assigned, an agents.hooks listener)."""

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context

from agents.services import assignment_run
from conversations.models import Chat
from tenants.metrics import tenant_metrics_forget, tenant_metrics_read


def test_each_assigned_chat_adds_its_wait_since_arrival_after_the_assignment_commits(
    tenant_a, application_a, make_agent, chats, runs, django_capture_on_commit_callbacks
):
    # given three chats that arrived 90 s ago and one agent with room for two
    tenant_metrics_forget(schema_name=tenant_a.schema_name)
    make_agent(max_customers=2)
    chats(tenant_a, application_a, 3)
    with schema_context(tenant_a.schema_name):
        Chat.objects.update(created_at=timezone.now() - timedelta(seconds=90))

        # when the assignment runs and commits
        with django_capture_on_commit_callbacks() as callbacks:
            assert assignment_run() == 2
        observed_before_commit = tenant_metrics_read(schema_names=[tenant_a.schema_name])[tenant_a.schema_name]
        with CaptureQueriesContext(connection) as queries:
            for callback in callbacks:
                callback()

    # the waits come with the announcement: counting them reads nothing back from the database
    assert [query["sql"] for query in queries.captured_queries] == []

    # then nothing was observed inside the transaction, and after it the two waits, each between 60 and 120 s
    assert callbacks
    assert not any(field.startswith("assignment_wait") for field in observed_before_commit)
    stored = tenant_metrics_read(schema_names=[tenant_a.schema_name])[tenant_a.schema_name]
    assert stored["assignment_wait|-|count"] == "2"
    assert stored["assignment_wait|-|le|120.0"] == "2"
    assert 180 <= float(stored["assignment_wait|-|sum"]) < 200
    tenant_metrics_forget(schema_name=tenant_a.schema_name)
