"""A schema copied from the template by tenants.schemas.schema_clone is the schema migrations make.

One schema is made by running every migration, one by copying the template; their catalogs are read back
with every schema name taken out and compared whole: columns, relations, indexes, constraints, sequences,
triggers and the rows migrations leave behind.
"""

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DataError, IntegrityError, connection, transaction
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import quote_schema_name, schema_context, schema_exists

from conversations.models import Application, Chat, Message
from core.models import User
from core.services import user_create
from tenants import models as tenant_models
from tenants import schemas as schemas_module
from tenants.models import Domain, Tenant
from tenants.schemas import schema_clone, schema_clone_unsupported, schema_migrations_pending
from tenants.services import tenant_create

MIGRATED = "clone_check_migrated"
CLONED = "clone_check_cloned"
PASSWORD = "a-long-password-42"


def _rows(sql: str, params: list | dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _catalog(schema: str) -> dict[str, list]:
    """Everything migrations decide about a schema, with the schema's own name replaced by `<schema>`."""
    quoted = quote_schema_name(schema)
    unquoted = schema  # how PostgreSQL prints a plain lowercase name

    def anonymous(rows):
        def value(item):
            if isinstance(item, str):
                return item.replace(f"{quoted}.", "<schema>.").replace(f"{unquoted}.", "<schema>.")
            return item

        return sorted((tuple(value(item) for item in row) for row in rows), key=repr)

    params = {"schema": schema}
    return {
        # information_schema.columns minus where the schema is and the column's attnum (a clone has no gaps
        # left by dropped columns); each column's place among its table's columns instead.
        "columns": anonymous(_rows("""
            SELECT table_name, column_name,
                   rank() OVER (PARTITION BY table_name ORDER BY ordinal_position) AS position,
                   column_default, is_nullable, data_type, character_maximum_length, numeric_precision,
                   numeric_scale, datetime_precision, collation_name, udt_name, is_identity, identity_generation,
                   identity_start, identity_increment, identity_maximum, identity_minimum, identity_cycle,
                   is_generated, generation_expression, is_updatable
              FROM information_schema.columns WHERE table_schema = %(schema)s
        """, params)),  # fmt: skip
        "relations": anonymous(_rows("""
            SELECT c.relname, c.relkind, c.relpersistence, c.reloptions, c.relchecks, c.relhastriggers,
                   c.relrowsecurity, c.reltoastrelid <> 0, obj_description(c.oid, 'pg_class')
              FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace
        """, params)),  # fmt: skip
        "indexes": anonymous(_rows("""
            SELECT t.relname, x.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary,
                   i.indisexclusion, i.indimmediate, i.indisvalid, i.indnullsnotdistinct
              FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
             WHERE t.relnamespace = %(schema)s::regnamespace
        """, params)),  # fmt: skip
        "constraints": anonymous(_rows("""
            SELECT t.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), k.condeferrable, k.condeferred,
                   k.convalidated, x.relname, rn.nspname = %(schema)s, r.relname
              FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
              LEFT JOIN pg_class x ON x.oid = k.conindid
              LEFT JOIN pg_class r ON r.oid = k.confrelid LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
             WHERE t.relnamespace = %(schema)s::regnamespace
        """, params)),  # fmt: skip
        "sequences": anonymous(_rows("""
            SELECT s.sequencename, s.data_type, s.start_value, s.min_value, s.max_value, s.increment_by, s.cycle,
                   s.cache_size, s.last_value, t.relname, a.attname, d.deptype
              FROM pg_sequences s
              JOIN pg_depend d ON d.classid = 'pg_class'::regclass
                              AND d.objid = format('%%I.%%I', s.schemaname, s.sequencename)::regclass
                              AND d.refclassid = 'pg_class'::regclass
              JOIN pg_class t ON t.oid = d.refobjid
              JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE s.schemaname = %(schema)s
        """, params)),  # fmt: skip
        # Internal (foreign key) triggers are named after OIDs: compared by what they are, not their names.
        "triggers": anonymous(_rows("""
            SELECT t.relname, CASE WHEN g.tgisinternal THEN '' ELSE g.tgname END, g.tgisinternal, g.tgtype,
                   g.tgfoid::regproc::text, g.tgenabled, g.tgdeferrable, g.tginitdeferred, k.conname
              FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid LEFT JOIN pg_constraint k ON k.oid = g.tgconstraint
             WHERE t.relnamespace = %(schema)s::regnamespace
        """, params)),  # fmt: skip
    }


def _data(schema: str) -> dict[str, list]:
    quoted = quote_schema_name(schema)
    return {
        "migrations": _rows(f"SELECT app, name FROM {quoted}.django_migrations ORDER BY app, name", []),
        "content_types": _rows(f"SELECT app_label, model FROM {quoted}.django_content_type ORDER BY 1, 2", []),
        "permissions": _rows(f"""SELECT c.app_label, c.model, p.codename, p.name
                                   FROM {quoted}.auth_permission p JOIN {quoted}.django_content_type c
                                     ON c.id = p.content_type_id ORDER BY 1, 2, 3""", []),  # fmt: skip
    }


@pytest.fixture(scope="module")
def schemas(django_db_setup, django_db_blocker):
    """One schema migrated from nothing, one copied from the template; committed, dropped at the end."""
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {quote_schema_name(MIGRATED)}")
        call_command("migrate_schemas", tenant=True, schema_name=MIGRATED, interactive=False, verbosity=0)
        connection.set_schema_to_public()
        schema_clone(source=settings.TENANT_TEMPLATE_SCHEMA, target=CLONED)
    yield
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        with connection.cursor() as cursor:
            for schema in (MIGRATED, CLONED):
                cursor.execute(f"DROP SCHEMA IF EXISTS {quote_schema_name(schema)} CASCADE")


def test_the_template_holds_nothing_the_copy_cannot_copy(db):
    assert schema_clone_unsupported(source=settings.TENANT_TEMPLATE_SCHEMA) == []


@pytest.mark.parametrize("part", ["columns", "relations", "indexes", "constraints", "sequences", "triggers"])
def test_a_copy_has_the_catalog_of_a_migrated_schema(schemas, db, part):
    migrated, cloned = _catalog(MIGRATED)[part], _catalog(CLONED)[part]

    assert cloned == migrated


def test_the_copy_has_what_the_checks_care_about(schemas, db):
    catalog = _catalog(CLONED)

    # the index of message search: buckets with the built-in array class, trigrams with pg_trgm's from public
    assert _rows("""SELECT x.relname, a.amname, o.opcname, o.opcnamespace::regnamespace::text, t.opcname
                      FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_am a ON a.oid = x.relam
                      JOIN pg_opclass o ON o.oid = i.indclass[0] JOIN pg_opclass t ON t.oid = i.indclass[1]
                     WHERE i.indrelid = %s::regclass AND a.amname = 'gin'""",
                 [f"{CLONED}.conversations_message"]) == [("message_search_idx", "gin", "array_ops", "pg_catalog", "gin_trgm_ops")]  # fmt: skip
    # deferred foreign keys that point at the copy's own tables, never at the template's
    assert ("conversations_message", "FOREIGN KEY (chat_id) REFERENCES <schema>.conversations_chat(id) DEFERRABLE INITIALLY DEFERRED") in [
        (constraint[0], constraint[3]) for constraint in catalog["constraints"]
    ]
    foreign_keys = _rows("""SELECT count(*), count(*) FILTER (WHERE r.relnamespace = %(schema)s::regnamespace)
                              FROM pg_constraint k JOIN pg_class r ON r.oid = k.confrelid
                             WHERE k.connamespace = %(schema)s::regnamespace AND k.contype = 'f'""",
                         {"schema": CLONED})  # fmt: skip
    assert foreign_keys[0][0] >= 20
    assert foreign_keys[0][0] == foreign_keys[0][1]
    # identity columns, each with its own sequence in the copy
    assert ("core_user_id_seq", "bigint", 1, 1, 9223372036854775807, 1, False, 1, None, "core_user", "id", "i") in catalog["sequences"]


def test_a_copy_has_the_rows_migrations_leave(schemas, db):
    # the template's rows, ids included, and the same set a migration run makes
    assert _data(CLONED) == _data(settings.TENANT_TEMPLATE_SCHEMA)
    assert _data(CLONED) == _data(MIGRATED)
    assert schema_migrations_pending(schema=CLONED) == []


def test_rows_go_into_the_copy_with_fresh_ids(db):
    # given a copy of its own (sequences are not transactional: the shared copy's must stay untouched)
    schema_clone(source=settings.TENANT_TEMPLATE_SCHEMA, target="clone_check_rows")

    # when rows are written in it
    with schema_context("clone_check_rows"):
        user = user_create(email="first@clone.test", password=PASSWORD, role=User.Role.ADMIN)
        application = Application.objects.create(name="First")
        chat = Chat.objects.create(application=application, number=1, assigned_agent=user)
        message = Message.objects.create(chat=chat, number=1, body="hello", author=user)
        content_type_ids = _rows("SELECT max(id) FROM django_content_type", [])[0][0]
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO django_content_type (app_label, model) VALUES ('probe', 'probe') RETURNING id")
            next_content_type_id = cursor.fetchone()[0]

    # then every identity starts at 1 where the template had no rows, and continues past the copied rows
    assert (user.id, application.id, chat.id, message.id) == (1, 1, 1, 1)
    assert next_content_type_id == content_type_ids + 1
    # and nothing reached the template
    template = quote_schema_name(settings.TENANT_TEMPLATE_SCHEMA)
    assert _rows(f"SELECT count(*) FROM {template}.core_user", []) == [(0,)]
    assert _rows(f"SELECT count(*) FROM {template}.conversations_chat", []) == [(0,)]


def test_foreign_keys_of_the_copy_check_the_copys_rows(schemas, db):
    # given a user that exists in another schema only (the template gets one, rolled back with the test; an
    # explicit id, so that the template's sequence does not move)
    template = quote_schema_name(settings.TENANT_TEMPLATE_SCHEMA)
    elsewhere_id = 424242
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {template}.core_user (id, password, is_superuser, email, name, role, is_active, "
                       "is_staff, date_joined) VALUES (%s, 'x', false, 'elsewhere@test', '', 'admin', true, true, now())",
                       [elsewhere_id])  # fmt: skip

    # when the copy's token points at it, the copy's foreign key refuses it
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote_schema_name(CLONED)}.authtoken_token (key, created, user_id) "
                       "VALUES ('k', now(), %s)", [elsewhere_id])  # fmt: skip
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def _failing_half_way(monkeypatch) -> None:
    """Makes every copy fail on its last statement, after the schema and its tables were made."""
    make_statements = schemas_module._schema_clone_statements
    monkeypatch.setattr(schemas_module, "_schema_clone_statements",
                        lambda **kwargs: [*make_statements(**kwargs), "SELECT 1 / 0"])  # fmt: skip


def test_a_copy_failing_half_way_leaves_no_schema_and_the_transaction_usable(db, monkeypatch):
    _failing_half_way(monkeypatch)

    with pytest.raises(DataError):
        schema_clone(source=settings.TENANT_TEMPLATE_SCHEMA, target="clone_check_half")

    # nothing of the copy is left, and the caller's transaction goes on, on the search path it had
    assert not schema_exists("clone_check_half")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schemas(false)")
        assert cursor.fetchone()[0] == ["public"]


def test_a_tenant_whose_copy_fails_leaves_nothing_behind(db, monkeypatch):
    _failing_half_way(monkeypatch)

    with pytest.raises(DataError):
        tenant_create(name="Broken", slug="broken", admin_email="a@broken.test", admin_password=PASSWORD)

    assert not Tenant.objects.filter(schema_name="broken").exists()
    assert not Domain.objects.filter(domain="broken.localhost").exists()
    assert not schema_exists("broken")
    assert not PeriodicTask.objects.filter(name__contains="broken").exists()


def test_a_tenant_of_an_up_to_date_template_runs_no_migration(db, monkeypatch):
    # given the code's migrations all recorded in the template
    assert schema_migrations_pending(schema=settings.TENANT_TEMPLATE_SCHEMA) == []

    def no_migrate(*args, **kwargs):
        raise AssertionError("migrate_schemas ran for an up-to-date template")

    monkeypatch.setattr(tenant_models, "call_command", no_migrate)

    # when a tenant is created, it gets every table without a migration run
    tenant = tenant_create(name="Quick", slug="quick", admin_email="a@quick.test", admin_password=PASSWORD)

    assert schema_migrations_pending(schema=tenant.schema_name) == []
    with schema_context("quick"):
        assert User.objects.get().email == "a@quick.test"


def test_a_template_with_an_object_the_copy_does_not_handle_falls_back_to_the_general_clone(db, monkeypatch):
    # given a template with a view and a free-standing sequence (rolled back with the test)
    template = quote_schema_name(settings.TENANT_TEMPLATE_SCHEMA)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE VIEW {template}.open_chats AS SELECT id FROM {template}.conversations_chat")
        cursor.execute(f"CREATE SEQUENCE {template}.invoice_numbers")

    assert sorted(schema_clone_unsupported(source=settings.TENANT_TEMPLATE_SCHEMA)) == [
        f"sequence {settings.TENANT_TEMPLATE_SCHEMA}.invoice_numbers (not an identity column's)",
        f"view {settings.TENANT_TEMPLATE_SCHEMA}.open_chats",
    ]  # fmt: skip

    # when a tenant is created, the copy is left to django-tenants' clone_schema (stopped here: it copies
    # views and sequences, and takes 2-30 s)
    calls = []

    class CloneSchemaCalled(Exception):
        pass

    class RecordingCloneSchema:
        def clone_schema(self, *args):
            calls.append(args)
            raise CloneSchemaCalled

    monkeypatch.setattr(tenant_models, "CloneSchema", RecordingCloneSchema)
    with pytest.raises(CloneSchemaCalled):
        tenant_create(name="Viewer", slug="viewer", admin_email="a@viewer.test", admin_password=PASSWORD)

    assert calls == [(settings.TENANT_TEMPLATE_SCHEMA, "viewer", "DATA")]
    assert not Tenant.objects.filter(schema_name="viewer").exists()
