"""`migrate_schemas` migrates only the tenant schemas that lack a migration, reports the ones that record
migrations the code does not have, runs schemas in parallel when asked, and keeps `--schema` working.

Committed data (`live_db`): the command commits per schema, and the parallel runner forks processes that
need their own connections. The tenants here are made in bulk (rows + schema copies) and removed after.
"""

import io
import os
import uuid

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django_tenants.signals import schema_pre_migration
from django_tenants.utils import quote_schema_name

from tenants.bulk import tenants_bulk_create
from tenants.models import Domain, Tenant
from tenants.schemas import schema_clone
from tenants.schema_migrations import schemas_migration_state


@pytest.fixture
def bulk_tenants(live_db):
    """Makes committed tenants (rows, domains, schemas copied from the template, some transactions of 2
    schemas); drops them afterwards."""
    made: list[str] = []

    def make(count: int) -> list[str]:
        slugs = [f"mig-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        made.extend(slugs)
        tenants = tenants_bulk_create(slugs=slugs, per_transaction=2)
        assert [tenant.schema_name for tenant in tenants] == slugs
        assert sorted(Domain.objects.filter(tenant__in=tenants).values_list("domain", flat=True)) == sorted(
            f"{slug}.{settings.BASE_DOMAIN}" for slug in slugs
        )
        return slugs

    yield make
    connection.set_schema_to_public()
    Tenant.objects.filter(schema_name__in=made).delete()
    with connection.cursor() as cursor:
        for slug in made:
            cursor.execute(f"DROP SCHEMA IF EXISTS {quote_schema_name(slug)} CASCADE")


@pytest.fixture
def migrate_calls(tmp_path):
    """Records every tenant schema Django's migrate starts in (django-tenants' signal), as (process id, schema),
    in forked children too: their receiver is this one, inherited, and writes to the same file. The template
    schema, migrated by every run, is left out."""
    record = tmp_path / "migrate-calls.txt"
    record.touch()

    def recording(sender, schema_name, **kwargs):
        with open(record, "a") as file:
            file.write(f"{os.getpid()} {schema_name}\n")

    schema_pre_migration.connect(recording, weak=False)
    def calls(*, forget: bool = False, every_schema: bool = False) -> list[tuple[str, str]]:
        rows = [tuple(line.split(" ")) for line in record.read_text().splitlines()]
        if forget:  # the given's own migrate runs are not the ones under test
            record.write_text("")
        return [(pid, schema) for pid, schema in rows if every_schema or schema != settings.TENANT_TEMPLATE_SCHEMA]

    yield calls
    schema_pre_migration.disconnect(recording)


def _leaf_and_previous(app: str) -> tuple[str, str]:
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    (leaf,) = graph.leaf_nodes(app)
    (previous,) = [parent for parent in graph.node_map[leaf].parents if parent[0] == app]
    return leaf[1], previous[1]


def _unapply_last_agents_migration(schema: str) -> tuple[str, str]:
    # A real unapply of a reversible migration: its column goes, and its row.
    leaf, previous = _leaf_and_previous("agents")
    call_command("migrate_schemas", "agents", previous, schema_name=schema, interactive=False, verbosity=0)
    connection.set_schema_to_public()
    return ("agents", leaf)


def _columns(schema: str, table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
                WHERE table_schema = %s AND table_name = %s ORDER BY column_name""",
            [schema, table],
        )
        return cursor.fetchall()


def _applied(schema: str) -> set[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT app, name FROM {quote_schema_name(schema)}.django_migrations")
        return set(cursor.fetchall())


def _migrate(**options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    options.setdefault("tenant", True)
    call_command("migrate_schemas", interactive=False, verbosity=1, stdout=out, stderr=err, **options)
    connection.set_schema_to_public()
    return out.getvalue(), err.getvalue()


def test_up_to_date_schemas_are_not_migrated(bulk_tenants, migrate_calls):
    # given tenants whose schemas record every migration of the code
    slugs = bulk_tenants(5)
    assert all(state.is_up_to_date for state in schemas_migration_state(schemas=slugs).values())

    # when a deploy runs migrate_schemas (public, template and tenants)
    out, err = _migrate(tenant=False)

    # then no schema goes through Django's migrate, and the run says so
    assert migrate_calls(every_schema=True) == []
    total = Tenant.objects.exclude(schema_name="public").count()
    assert "public schema: up to date" in out
    assert f"template schema {settings.TENANT_TEMPLATE_SCHEMA}: up to date" in out
    assert f"tenant schemas: {total}, up to date: {total}, to migrate: 0" in out
    assert err == ""


def test_the_template_is_migrated_when_it_lacks_a_migration(live_db, migrate_calls):
    # given a template without the last agents migration
    template = settings.TENANT_TEMPLATE_SCHEMA
    missing = _unapply_last_agents_migration(template)
    migrate_calls(forget=True)

    # when a deploy runs migrate_schemas
    out, _ = _migrate()

    # then the template was migrated (and nothing else), and lacks nothing any more
    assert [schema for _, schema in migrate_calls(every_schema=True)] == [template]
    assert missing in _applied(template)
    assert schemas_migration_state(schemas=[template])[template].is_up_to_date


def test_only_the_schema_that_lacks_a_migration_is_migrated_and_ends_like_the_others(bulk_tenants, migrate_calls):
    # given five tenants, one of them without the last agents migration (its column dropped, its row gone)
    slugs = bulk_tenants(5)
    stale = slugs[2]
    missing = _unapply_last_agents_migration(stale)
    assert missing not in _applied(stale)
    assert _columns(stale, "agents_agent") != _columns(slugs[0], "agents_agent")
    assert schemas_migration_state(schemas=[stale])[stale].missing == (missing,)

    migrate_calls(forget=True)

    # when a deploy runs migrate_schemas
    out, _ = _migrate()

    # then only that schema was migrated, and it now equals the others
    assert [schema for _, schema in migrate_calls()] == [stale]
    assert _applied(stale) == _applied(slugs[0])
    assert _columns(stale, "agents_agent") == _columns(slugs[0], "agents_agent")
    assert "to migrate: 1" in out
    assert "migrating: 1/1 schemas" in out
    assert schemas_migration_state(schemas=slugs)[stale].is_up_to_date


def test_a_schema_recording_a_migration_the_code_lacks_is_reported(bulk_tenants, migrate_calls):
    # given a schema that records a migration of newer code that was rolled back
    slugs = bulk_tenants(2)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote_schema_name(slugs[1])}.django_migrations (app, name, applied) "
            "VALUES ('agents', '9999_from_newer_code', now())"
        )

    # when a deploy runs migrate_schemas
    _, err = _migrate()

    # then it is named on stderr (nothing to apply in it: not migrated)
    assert "1 schema(s) record migrations this code does not have" in err
    assert "agents.9999_from_newer_code" in err and slugs[1] in err
    assert slugs[0] not in err
    assert migrate_calls() == []


def test_the_multiprocessing_executor_migrates_stale_schemas_in_child_processes(bulk_tenants, migrate_calls):
    # given three tenants, two without the last agents migration
    slugs = bulk_tenants(3)
    stale = sorted(slugs[:2])
    for schema in stale:
        missing = _unapply_last_agents_migration(schema)

    migrate_calls(forget=True)

    # when migrated with the parallel executor
    out, _ = _migrate(executor="multiprocessing")

    # then both were migrated, in processes other than this one, and the progress line counted them
    calls = migrate_calls()
    assert sorted(schema for _, schema in calls) == stale
    assert str(os.getpid()) not in {pid for pid, _ in calls}
    assert "migrating: 2/2 schemas" in out
    for schema in stale:
        assert missing in _applied(schema)
        assert _columns(schema, "agents_agent") == _columns(slugs[2], "agents_agent")


def test_schema_option_migrates_that_schema_only(bulk_tenants):
    # given two tenants lacking the same migration
    first, second = bulk_tenants(2)
    missing = _unapply_last_agents_migration(first)
    _unapply_last_agents_migration(second)

    # when one is named
    call_command("migrate_schemas", schema_name=first, interactive=False, verbosity=0)
    connection.set_schema_to_public()

    # then only it is migrated
    assert missing in _applied(first)
    assert missing not in _applied(second)


def test_a_failing_schema_fails_the_command_by_name_and_starts_no_other(bulk_tenants, migrate_calls):
    # given two stale schemas; the first one's migration breaks (the column it adds is already there)
    first, second = bulk_tenants(2)
    _unapply_last_agents_migration(first)
    _unapply_last_agents_migration(second)
    ordered = list(Tenant.objects.filter(schema_name__in=[first, second]).order_by("id").values_list("schema_name", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {quote_schema_name(ordered[0])}.agents_agent ADD COLUMN active_chats integer")
    migrate_calls(forget=True)

    # when a deploy runs migrate_schemas
    with pytest.raises(CommandError, match=f"1 schema\\(s\\) failed to migrate: {ordered[0]}"):
        _migrate()

    # then the second schema was not started, and the first recorded nothing half-way
    assert [schema for _, schema in migrate_calls()] == [ordered[0]]
    assert ("agents", _leaf_and_previous("agents")[0]) not in _applied(ordered[0])


def _statistics_targets(schema: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT c.relname, a.attname, a.attstattarget FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                WHERE c.relnamespace = %s::regnamespace AND a.attnum > 0 AND a.attstattarget > 0 ORDER BY 1, 2""",
            [schema],
        )
        return cursor.fetchall()


@pytest.fixture
def template_statistics_target(live_db):
    # No migration leaves a statistics target today (conversations.0007 reset 0005's): give the template one.
    table = f"{quote_schema_name(settings.TENANT_TEMPLATE_SCHEMA)}.conversations_message"
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN body SET STATISTICS 321")
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN body SET STATISTICS -1")


def test_copies_are_whole_schemas_with_the_templates_statistics_targets(template_statistics_target, bulk_tenants):
    # when schemas are copied in bulk, and one as provisioning copies it
    first, second = bulk_tenants(2)
    single = f"mig-one-{uuid.uuid4().hex[:8]}"
    schema_clone(source=settings.TENANT_TEMPLATE_SCHEMA, target=single)

    # then each has the template's migrations, tables and per-column statistics targets
    template = settings.TENANT_TEMPLATE_SCHEMA
    assert _statistics_targets(template) == [("conversations_message", "body", 321)]
    try:
        for schema in (first, second, single):
            _assert_like_the_template(schema)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA {quote_schema_name(single)} CASCADE")


def _assert_like_the_template(schema: str) -> None:
    template = settings.TENANT_TEMPLATE_SCHEMA
    assert _applied(schema) == _applied(template)
    assert _columns(schema, "conversations_message") == _columns(template, "conversations_message")
    assert _statistics_targets(schema) == _statistics_targets(template)
