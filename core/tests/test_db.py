"""The search path is set once per schema change, and never trusted after a rollback undid it."""

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from core.models import User


def _search_path() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        return cursor.fetchone()[0]


def test_search_path_is_set_once_per_schema_change(tenant_a):
    with schema_context(tenant_a.schema_name), CaptureQueriesContext(connection) as queries:
        User.objects.count()
        User.objects.count()
        User.objects.count()

    sets = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SET search_path")]
    assert len(sets) == 1


def test_a_savepoint_rollback_that_undid_the_search_path_is_noticed(tenant_a, tenant_b):
    # given a connection on tenant B's path, switched to A inside a savepoint that is rolled back
    with schema_context(tenant_b.schema_name):
        assert _search_path().startswith(f'"{tenant_b.schema_name}"') or _search_path().startswith(tenant_b.schema_name)
        with schema_context(tenant_a.schema_name):
            try:
                with transaction.atomic():
                    assert tenant_a.schema_name in _search_path()  # the SET happened inside the savepoint
                    raise RuntimeError("roll the savepoint back")
            except RuntimeError:
                pass
            # PostgreSQL undid the SET; the next query must set it again rather than read B's tables
            assert _search_path().split(",")[0].strip('"') == tenant_a.schema_name
