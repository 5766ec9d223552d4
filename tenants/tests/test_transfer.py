"""Tenant backup and move (tenants/transfer.py): an archive of one tenant restored into a second PostgreSQL database
and a second Redis database, numbering, counts and queued creations intact; refusals leave nothing behind."""

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django_tenants.utils import schema_context, schema_exists

from conversations import creations, services
from core.redis import get_redis
from core.tests.fixtures.workers import _test_database_url
from core.tests.support import ROOT
from tenants.models import Tenant, TenantWork


@pytest.fixture
def drains_held(monkeypatch):
    """No drain task is sent (a worker of the session would drain the queue before the export): the test
    drains when it chooses, with the service the task calls."""
    monkeypatch.setattr(services, "_drain_schedule", lambda: None)


def _table_counts(schema: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
            [schema],
        )
        tables = [name for (name,) in cursor.fetchall()]
        counts = {}
        for table in tables:
            cursor.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
            counts[table] = cursor.fetchone()[0]
    return counts


class TargetServer:
    """A second database on the test's PostgreSQL server and a second Redis database: another installation of
    the same code, driven through manage.py in subprocesses, as an operator would."""

    def __init__(self):
        self.database = f"{connection.settings_dict['NAME']}_move_{uuid.uuid4().hex[:6]}"
        source_db = int(settings.REDIS_URL.rsplit("/", 1)[1] or 0)
        self.redis_url = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{(source_db + 7) % 16}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "sociomile.settings.test",
            "DATABASE_URL": _test_database_url().rsplit("/", 1)[0] + f"/{self.database}",
            "REDIS_URL": self.redis_url,
        }
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.database}"')
        self.redis().flushdb()

    def redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url)

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=900)  # fmt: skip
        if check and result.returncode != 0:
            pytest.fail(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def run_python(self, code: str) -> dict:
        return json.loads(self.manage("shell", "-c", code).stdout.strip().splitlines()[-1])

    def drop(self):
        self.redis().flushdb()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@pytest.fixture
def target_server(live_db):
    server = TargetServer()
    yield server
    server.drop()


# What the target reads, drains and creates next (run in the target's manage.py shell).
_TARGET_CHECK = """
import json
from django.db import connection
from django_tenants.utils import schema_context
from conversations import creations, services
from conversations.models import Application, Chat, Message
from core.redis import get_redis
from tenants.models import Domain, Tenant, TenantWork
from tenants.work import CREATIONS_ACTIVE_KEY

services._drain_schedule = lambda: None  # this installation has no worker: the check drains it itself
slug = SLUG
out = {"tenants": sorted(Tenant.objects.values_list("schema_name", flat=True))}
tenant = Tenant.objects.get(schema_name=slug)
out["tenant"] = [tenant.name, tenant.concurrency, tenant.created_at.isoformat()]
out["domains"] = list(Domain.objects.filter(tenant=tenant).values_list("domain", flat=True))
out["work"] = sorted(TenantWork.objects.filter(tenant=tenant).values_list("kind", flat=True))
out["overdue_drain"] = get_redis().zscore(CREATIONS_ACTIVE_KEY, slug)
counts = {}
with connection.cursor() as cursor:
    for table in TABLES:
        cursor.execute(f'SELECT count(*) FROM "{slug}"."{table}"')
        counts[table] = cursor.fetchone()[0]
out["counts"] = counts
with schema_context(slug):
    out["queued"] = [json.loads(item)["kind"] for item in get_redis().lrange(creations.pending_key(), 0, -1)]
    out["drained"] = services.creations_persist(batch_size=1000)
    application = Application.objects.get(name="Widget")
    out["chats"] = sorted(Chat.objects.filter(application=application).values_list("number", flat=True))
    out["messages"] = sorted(map(list, Message.objects.values_list("chat__number", "number", "body")))
    out["next_chat"] = services.chat_create(application=application, customer_id="c5")
    out["next_message"] = services.message_create(application=application, chat_number=1, body="after the move")
    out["new_application_id"] = services.application_create(name="Made after the move").id
print(json.dumps(out))
"""


def test_a_tenant_moves_to_another_database_with_its_numbering_counts_and_queued_creations(
    make_live_tenant, drains_held, target_server, tmp_path
):
    # given a tenant with persisted chats and messages and creations still queued in Redis, and another tenant
    tenant = make_live_tenant("move")
    other = make_live_tenant("stay")
    with schema_context(tenant.schema_name):
        application = services.application_create(name="Widget")
        for customer in ("c1", "c2", "c3"):
            services.chat_create(application=application, customer_id=customer)
        for number in (1, 2, 3):
            services.message_create(application=application, chat_number=number, body=f"hello {number}")
        services.message_create(application=application, chat_number=1, body="again")
        assert services.creations_persist(batch_size=1000) == 7
        assert services.chat_create(application=application, customer_id="c4") == 4
        services.message_create(application=application, chat_number=4, body="queued")
        services.message_create(application=application, chat_number=2, body="queued too")
        queued = [json.loads(item)["kind"] for item in get_redis().lrange(creations.pending_key(), 0, -1)]
        application_id = application.id
    with schema_context(other.schema_name):
        other_application = services.application_create(name="Other widget")
        services.chat_create(application=other_application, customer_id="o1")
    source_counts = _table_counts(tenant.schema_name)
    source_work = sorted(TenantWork.objects.filter(tenant=tenant).values_list("kind", flat=True))
    archive_path = tmp_path / "move.tar.gz"

    # when it is exported here and imported into the second database and Redis
    call_command("tenant_export", tenant.schema_name, str(archive_path))
    target_server.manage("migrate_schemas")
    imported = target_server.manage("tenant_import", str(archive_path))

    # then the archive holds this tenant only: its tables, its public rows, its data keys in Redis
    with tarfile.open(archive_path, "r:gz") as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())
        redis_keys = {json.loads(line)["key"] for line in archive.extractfile("redis.jsonl").read().splitlines()}
        assert not any(other.schema_name.encode() in archive.extractfile(member).read()
                       for member in archive.getmembers())  # fmt: skip
    assert manifest["slug"] == tenant.schema_name
    assert {table["name"]: table["rows"] for table in manifest["tables"]} == source_counts
    assert [row["domain"] for row in manifest["public_rows"]["domains"]] == [f"{tenant.schema_name}.localhost"]
    assert {f"app:{application_id}:chats", "creations", f"app:{application_id}:chat:4:messages"} <= redis_keys
    assert "creations:lock" not in redis_keys and "slots" not in redis_keys
    assert f"imported tenant {tenant.schema_name}" in imported.stdout

    # and the target holds every row and the queue; its drain persists the queued creations; numbering continues
    check = _TARGET_CHECK.replace("SLUG", repr(tenant.schema_name)).replace("TABLES", repr(sorted(source_counts)))
    moved = target_server.run_python(check)
    assert moved["tenants"] == [tenant.schema_name]
    assert moved["tenant"] == [tenant.name, tenant.concurrency, tenant.created_at.isoformat()]
    assert moved["domains"] == [f"{tenant.schema_name}.localhost"]
    assert moved["work"] == source_work
    assert moved["counts"] == source_counts
    assert moved["queued"] == queued == ["chat", "message", "message"]
    assert moved["overdue_drain"] == 0.0  # the target's dispatcher sends a drain on its next pass
    assert moved["drained"] == 3
    assert moved["chats"] == [1, 2, 3, 4]
    assert moved["messages"] == [
        [1, 1, "hello 1"], [1, 2, "again"], [2, 1, "hello 2"], [2, 2, "queued too"], [3, 1, "hello 3"], [4, 1, "queued"],
    ]  # fmt: skip
    assert moved["next_chat"] == 5
    assert moved["next_message"] == 3
    assert moved["new_application_id"] > application_id  # the sequence is past the largest id

    # and a second import is refused: the tenant exists there
    again = target_server.manage("tenant_import", str(archive_path), check=False)
    assert again.returncode != 0
    assert f"a tenant '{tenant.schema_name}' exists in this database" in again.stderr


def _archive_rewrite(source, target, change) -> None:
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read()
            if member.name == "manifest.json":
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            new.addfile(member, io.BytesIO(data))


def _renamed(manifest: dict, slug: str) -> None:
    """The archive's tenant as a new one: another slug, schema and domain (so that only the edit under test can
    refuse it)."""
    manifest["slug"] = slug
    manifest["public_rows"]["tenant"]["schema_name"] = slug
    manifest["public_rows"]["domains"] = [{"domain": f"{slug}.localhost", "is_primary": True}]


def test_import_is_refused_when_the_migrations_differ_and_writes_nothing(make_live_tenant, drains_held, tmp_path):
    # given an archive whose tenant would be new here, made by code with one more migration
    tenant = make_live_tenant("mig")
    with schema_context(tenant.schema_name):
        services.chat_create(application=services.application_create(name="Widget"), customer_id="c1")
    call_command("tenant_export", tenant.schema_name, str(tmp_path / "a.tar.gz"))
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"

    def newer_code(manifest):
        _renamed(manifest, ghost)
        manifest["migrations"]["tenant"].append(["conversations", "9999_from_the_future"])

    _archive_rewrite(tmp_path / "a.tar.gz", tmp_path / "b.tar.gz", newer_code)

    # when it is imported
    with pytest.raises(CommandError) as refused:
        call_command("tenant_import", str(tmp_path / "b.tar.gz"))

    # then it is refused, naming the migration, and nothing of it exists
    assert "the tenant schema's migrations differ" in str(refused.value)
    assert "conversations.9999_from_the_future" in str(refused.value)
    assert not Tenant.objects.filter(schema_name=ghost).exists()
    assert not schema_exists(ghost)
    assert list(get_redis().scan_iter(match=f"sociomile:{ghost}:*")) == []


def test_export_is_refused_while_a_drain_runs_and_for_an_unknown_tenant(make_live_tenant, tmp_path):
    tenant = make_live_tenant("busy")
    with schema_context(tenant.schema_name):
        token = creations.lock_acquire()  # a drain is moving creations from Redis to PostgreSQL
    try:
        with pytest.raises(CommandError, match="a drain of .* is running"):
            call_command("tenant_export", tenant.schema_name, str(tmp_path / "busy.tar.gz"))
    finally:
        with schema_context(tenant.schema_name):
            creations.lock_release(token)
    with pytest.raises(CommandError, match="no tenant 'nobody'"):
        call_command("tenant_export", "nobody", str(tmp_path / "nobody.tar.gz"))
    assert not (tmp_path / "busy.tar.gz").exists() and not (tmp_path / "nobody.tar.gz").exists()


def test_import_of_a_file_that_is_not_an_archive_is_a_clear_error(tmp_path, live_db):
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(CommandError, match="not a tenant archive"):
        call_command("tenant_import", str(tmp_path / "junk.tar.gz"))


def test_an_edited_archive_naming_a_sequence_the_schema_lacks_is_refused_and_rolled_back(
    make_live_tenant, drains_held, tmp_path
):
    # given an archive of a tenant with a queued chat, renamed to a new slug, one of its sequences edited to
    # carry SQL in its column's name
    tenant = make_live_tenant("seq")
    with schema_context(tenant.schema_name):
        services.chat_create(application=services.application_create(name="Widget"), customer_id="c1")
    call_command("tenant_export", tenant.schema_name, str(tmp_path / "a.tar.gz"))
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"

    def edited(manifest):
        _renamed(manifest, ghost)
        manifest["sequences"][0]["column"] = 'id") FROM pg_class; DROP TABLE x; --'

    _archive_rewrite(tmp_path / "a.tar.gz", tmp_path / "b.tar.gz", edited)

    # when it is imported
    with pytest.raises(CommandError, match="is not in this database's template"):
        call_command("tenant_import", str(tmp_path / "b.tar.gz"))

    # then the schema copied and filled before the check is gone with its transaction, and no Redis key is left
    assert not Tenant.objects.filter(schema_name=ghost).exists()
    assert not schema_exists(ghost)
    assert list(get_redis().scan_iter(match=f"sociomile:{ghost}:*")) == []
