from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_exists


def _tables(schema: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])
        return {row[0] for row in cursor.fetchall()}


def _applied_migrations(schema: str) -> set[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT app, name FROM "{schema}".django_migrations')
        return set(cursor.fetchall())


def test_tenants_are_cloned_from_a_migrated_template(tenant_a):
    template = settings.TENANT_TEMPLATE_SCHEMA

    assert schema_exists(template)
    assert _tables(tenant_a.schema_name) == _tables(template)
    assert _applied_migrations(tenant_a.schema_name) == _applied_migrations(template)
    assert {"core_user", "authtoken_token", "conversations_inboundevent"} <= _tables(tenant_a.schema_name)
    # nothing of the public schema's own apps leaks into a tenant schema
    assert not {"tenants_tenant", "django_celery_beat_periodictask"} & _tables(tenant_a.schema_name)


def test_a_stale_template_is_completed_by_migrating_the_clone(platform_api):
    # given a template that lacks the last migration of an app (as if a deploy had not re-synced it)
    template = settings.TENANT_TEMPLATE_SCHEMA
    with connection.cursor() as cursor:
        # agents, events, reports and contacts depend on conversations, so they go too (Django refuses a history with
        # them alone applied)
        for table in (
            "contacts_contact", "events_deliveryattempt", "events_delivery", "events_webhookendpoint", "events_event", "reports_rollup",
            "agents_assignment", "agents_agent", "agents_allocationsettings", "conversations_ticket",
            "conversations_message", "conversations_chat", "conversations_application", "conversations_inboundevent",
        ):  # fmt: skip
            cursor.execute(f'DROP TABLE "{template}".{table} CASCADE')
        cursor.execute(f"DELETE FROM \"{template}\".django_migrations WHERE app IN ('conversations', 'agents', 'events', 'reports', 'contacts')")

    # when a tenant is created from it
    response = platform_api.post(
        "/api/tenants", {"name": "Fresh", "slug": "fresh", "admin_email": "a@fresh.test", "admin_password": "a-long-password-42"}
    )

    # then the tenant has the table all the same (the test transaction rolls the template back afterwards)
    assert response.status_code == 201
    assert {"conversations_inboundevent", "conversations_chat", "conversations_message", "agents_agent"} <= _tables("fresh")


def test_the_case_insensitive_schema_name_check_reads_the_upper_index(tenant_a):
    # django-tenants refuses a schema name that exists in another case with `schema_name__iexact`; the
    # expression index on UPPER(schema_name) must match that query's expression, or every provisioning
    # reads the whole tenants table (10,000 rows at scale). Sequential scans are off so the plan shows
    # whether the index can serve the query at all, whatever the table's size.
    from tenants.models import Tenant

    query = Tenant.objects.filter(schema_name__iexact=tenant_a.schema_name.upper()).values("id")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "tenant_schema_name_upper_idx" in plan
    assert list(query) == [{"id": tenant_a.id}]
