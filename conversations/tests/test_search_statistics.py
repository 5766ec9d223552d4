from django.db import connection


def test_message_bodies_keep_fine_statistics_in_every_tenant_schema(tenant_a, tenant_b):
    # Why: with the default target the planner takes a common word for a rare one and sorts every match of a
    # big chat for one page (migration 0005; bench/run --only read_path measures it).
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n.nspname, a.attstattarget FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = 'conversations_message' AND a.attname = 'body' AND n.nspname = ANY(%s)
            """,
            [[tenant_a.schema_name, tenant_b.schema_name]],
        )
        targets = dict(cursor.fetchall())

    assert targets == {tenant_a.schema_name: 1000, tenant_b.schema_name: 1000}
