"""The drain's hot statements are prepared once per connection and schema (core.prepared): later turns reuse
their parse and plan, and a statement never runs against another tenant's tables."""

from django.db import connection
from django_tenants.utils import schema_context

from conversations import services
from conversations.models import Chat


def _prepared_statements() -> list[tuple[str, int, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE NOT from_sql")
        return cursor.fetchall()


def test_each_tenant_has_its_own_prepared_statements_and_its_own_rows(tenant_a, tenant_b, drain):
    with schema_context(tenant_a.schema_name):
        application_a = services.application_create(name="Widget A")
    with schema_context(tenant_b.schema_name):
        application_b = services.application_create(name="Widget B")

    # when one connection drains the two tenants in turn, as a worker's connection does
    for turn in range(8):
        for tenant, application in ((tenant_a, application_a), (tenant_b, application_b)):
            with schema_context(tenant.schema_name):
                services.chat_create(application=application, customer_id=f"{tenant.schema_name}-{turn}")
            assert drain(tenant) == 1

    # then each tenant has its own eight chats
    for tenant in (tenant_a, tenant_b):
        with schema_context(tenant.schema_name):
            assert list(Chat.objects.order_by("number").values_list("number", "customer_id")) == [
                (turn + 1, f"{tenant.schema_name}-{turn}") for turn in range(8)
            ]
    # and each statement was prepared once per schema, under that schema's tag, and run at every turn
    # (PostgreSQL plans a prepared statement for its first five runs, then keeps its generic plan when that
    # costs no more: from then on a turn pays neither parse nor plan)
    statements = _prepared_statements()
    for tenant in (tenant_a, tenant_b):
        for marker in ("INSERT INTO conversations_chat ", "WITH source AS", "WITH new_chats AS"):
            runs = [(generic, custom) for sql, generic, custom in statements
                    if sql.startswith(f"/* {tenant.schema_name} */") and marker in " ".join(sql.split())]  # fmt: skip
            assert len(runs) == 1, marker
            assert sum(runs[0]) == 8 and runs[0][0] > 0, (marker, runs)
