"""Tenant backup and move: one archive holds everything of one tenant, and restores it into another database.

`tenant_export` (manage.py tenant_export <slug> <file>) writes a gzipped tar:

- `manifest.json`: format and version, the slug, the migrations applied to the tenant's schema and to the
  public schema (an archive restores only into code at the same migrations), each table's columns and row
  count, each sequence's state, the tenant's public rows (Tenant, its Domains, its TenantWork due-work rows)
  and how many Redis keys it holds;
- `tables/<table>.copy`: each table of the tenant's schema, PostgreSQL's COPY text format (portable across
  server versions), in foreign-key order;
- `redis.jsonl`: every key under `sociomile:<slug>:` (numbering counters, queued creations and their dead
  letters, idempotency claims, customers' open chats, metrics...), one JSON object per key with its type,
  value and remaining time to live. Not the coordination keys that describe processes of the source's
  fleet (TRANSIENT_KEYS: slot leases, a drain's lock, "a task is scheduled" flags) and not Django's cache
  entries: the target's own processes make those again.

`tenant_import` (manage.py tenant_import <file>) restores it in one PostgreSQL transaction: the schema is
copied from the target's template (so it has the target's structure), emptied, and filled with COPY;
sequences are set to the source's state and never below the largest id; the public rows are inserted; the
Redis keys are written before the commit (and deleted again if anything fails, so nothing is half-written).
After the commit the tenant's queue and slots open, and if creations were queued the tenant is put among
those with overdue creations, so the target's dispatcher sends a drain at once.

Consistency: stop the tenant's traffic first (docs/tenant-moves.md). The export holds the tenant's drain
lock, so no drain moves creations from Redis to PostgreSQL while it runs, reads Redis before it opens the
PostgreSQL snapshot, and reads every table in one REPEATABLE READ snapshot.
"""

import base64
import io
import json
import logging
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, quote_schema_name, schema_context, schema_exists

from core.exceptions import ApplicationError
from core.redis import get_redis, tenant_key
from tenants.models import Domain, Tenant, TenantWork
from tenants.queues import task_wake_by_name
from tenants.work import CREATIONS_DRAIN_TASK

logger = logging.getLogger(__name__)

ARCHIVE_FORMAT = "sociomile-tenant"
ARCHIVE_VERSION = 1

# Keys under `sociomile:<slug>:` that describe the source fleet's processes, not the tenant's data. Copied,
# they would block the target: leases of tasks that run nowhere, or a "drain already scheduled" flag that
# stops every request from sending one.
TRANSIENT_KEYS = frozenset({
    "slots", "slots:limit", "creations:scheduled", "creations:lock", "assignment:scheduled", "webhooks:scheduled",
})  # fmt: skip
TRANSIENT_KEY_PREFIXES = ("probes:", "stream:ticket:")

_COPY_CHUNK = 1024 * 1024


class TransferRefused(ApplicationError):
    """The export or import cannot be done as asked (the message says why); nothing was written."""


# --- export ---------------------------------------------------------------------------------------------------


def tenant_export(*, slug: str, path: Path) -> dict:
    """Writes the tenant's archive to `path`; returns its manifest. Raises TransferRefused."""
    from conversations import creations

    tenant = Tenant.objects.filter(schema_name=slug).first()
    if tenant is None:
        raise TransferRefused(f"no tenant {slug!r}")
    if tenant.deleting_since is not None:
        raise TransferRefused(f"tenant {slug!r} is being deleted")
    with schema_context(slug):
        drain_token = creations.lock_acquire()
    if drain_token is None:
        raise TransferRefused(
            f"a drain of {slug!r}'s queued creations is running: stop the tenant's traffic and try again"
        )
    try:
        redis_keys = _redis_export(schema_name=slug)  # before the snapshot: a record drained since is in both
        with tempfile.TemporaryDirectory(prefix=f"tenant-export-{slug}-") as folder:
            manifest = _postgres_export(tenant=tenant, folder=Path(folder))
            manifest["redis_keys"] = len(redis_keys)
            manifest["exported_at"] = timezone.now()
            _archive_write(path=path, manifest=manifest, folder=Path(folder), redis_keys=redis_keys)
    finally:
        with schema_context(slug):
            # A drain that found the lock held by this export returned, trusting the holder to look again.
            if creations.lock_hand_back(drain_token):
                task_wake_by_name(CREATIONS_DRAIN_TASK)
    logger.info("tenant exported: %s to %s", slug, path)
    return manifest


def _postgres_export(*, tenant: Tenant, folder: Path) -> dict:
    schema = tenant.schema_name
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if outermost:
                # One snapshot for every table (the first statement of the transaction; SET search_path,
                # which django-tenants may send before it, takes no snapshot).
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            tables = _tables_in_order(cursor, schema)
            for table in tables:
                table["rows"] = _table_copy_out(cursor, schema, table, folder / f"{table['name']}.copy")
            manifest = {
                "format": ARCHIVE_FORMAT,
                "version": ARCHIVE_VERSION,
                "slug": schema,
                "postgresql": connection.pg_version,
                "migrations": {
                    "tenant": _migrations_applied(cursor, schema),
                    "public": _migrations_applied(cursor, get_public_schema_name()),
                },
                "tables": tables,
                "sequences": _sequences(cursor, schema),
                "public_rows": {
                    "tenant": _row_fields(Tenant, Tenant.objects.filter(id=tenant.id).values().get()),
                    "domains": [_row_fields(Domain, row) for row in Domain.objects.filter(tenant=tenant).values()],
                    "work": [_row_fields(TenantWork, row) for row in TenantWork.objects.filter(tenant=tenant).values()],
                },
            }
    return manifest


def _row_fields(model, row: dict) -> dict:
    """A public row's own fields: not its id, nor its tenant (both are the target's)."""
    return {
        field.attname: row[field.attname]
        for field in model._meta.concrete_fields
        if not field.primary_key and field.attname != "tenant_id"
    }


def _tables_in_order(cursor, schema: str) -> list[dict]:
    """The schema's tables (partitions are copied through their parent), referenced tables first, each with
    its columns (generated columns left out: PostgreSQL computes them)."""
    cursor.execute(
        """
        SELECT c.relname, array_agg(a.attname ORDER BY a.attnum)
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        GROUP BY c.relname ORDER BY c.relname
        """,
        [schema],
    )
    columns = dict(cursor.fetchall())
    cursor.execute(
        """
        SELECT c.relname, r.relname
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_namespace rn ON rn.oid = r.relnamespace
        WHERE k.contype = 'f' AND n.nspname = %s AND rn.nspname = %s AND c.relname <> r.relname
        """,
        [schema, schema],
    )
    references: dict[str, set[str]] = {name: set() for name in columns}
    for table, referenced in cursor.fetchall():
        if table in references and referenced in references:
            references[table].add(referenced)
    ordered: list[str] = []
    while references:
        ready = sorted(name for name, needs in references.items() if not needs - set(ordered))
        if not ready:  # a cycle: Django's foreign keys are DEFERRABLE INITIALLY DEFERRED, so any order loads
            ready = sorted(references)
        for name in ready:
            ordered.append(name)
            del references[name]
    return [{"name": name, "columns": list(columns[name])} for name in ordered]


def _qualified(schema: str, table: str) -> str:
    return f"{quote_schema_name(schema)}.{connection.ops.quote_name(table)}"


def _column_list(columns: list[str]) -> str:
    return ", ".join(connection.ops.quote_name(column) for column in columns)


def _table_copy_out(cursor, schema: str, table: dict, target: Path) -> int:
    rows = 0
    with open(target, "wb") as output:
        query = f"COPY (SELECT {_column_list(table['columns'])} FROM {_qualified(schema, table['name'])}) TO STDOUT"
        with cursor.copy(query) as copy:
            for chunk in copy:
                output.write(chunk)
                rows += bytes(chunk).count(b"\n")  # one line per row: text COPY escapes newlines in values
    return rows


def _migrations_applied(cursor, schema: str) -> list[list[str]]:
    cursor.execute(f"SELECT app, name FROM {_qualified(schema, 'django_migrations')} ORDER BY app, name")
    return [list(row) for row in cursor.fetchall()]


def _sequences(cursor, schema: str) -> list[dict]:
    """Each sequence of the schema with its state and the column it numbers (identity or serial)."""
    cursor.execute(
        """
        SELECT s.relname, q.last_value, q.is_called, t.relname, a.attname
        FROM pg_class s
        JOIN pg_namespace n ON n.oid = s.relnamespace
        CROSS JOIN LATERAL pg_sequence_last_value(s.oid) AS v(last_value)
        CROSS JOIN LATERAL (SELECT v.last_value IS NOT NULL AS is_called,
                                   coalesce(v.last_value, (SELECT seqstart FROM pg_sequence WHERE seqrelid = s.oid))
                                   AS last_value) q
        LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class t ON t.oid = d.refobjid
        LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE s.relkind = 'S' AND n.nspname = %s
        ORDER BY s.relname
        """,
        [schema],
    )
    return [
        {"name": name, "last_value": last_value, "is_called": is_called, "table": table, "column": column}
        for name, last_value, is_called, table, column in cursor.fetchall()
    ]


def _redis_key_is_transient(relative: str) -> bool:
    return relative in TRANSIENT_KEYS or relative.startswith(TRANSIENT_KEY_PREFIXES)


def _redis_export(*, schema_name: str) -> list[dict]:
    """Every data key of the tenant, by type; a value is bytes, written as base64."""
    client = get_redis()
    prefix = tenant_key(schema_name, "")
    escaped = "".join(f"\\{char}" if char in "*?[]\\" else char for char in prefix)
    records = []
    for raw_key in sorted(client.scan_iter(match=f"{escaped}*", count=5000)):
        relative = raw_key.decode()[len(prefix):]
        if _redis_key_is_transient(relative):
            continue
        kind = client.type(raw_key).decode()
        if kind == "string":
            value = _b64(client.get(raw_key))
        elif kind == "list":
            value = [_b64(item) for item in client.lrange(raw_key, 0, -1)]
        elif kind == "hash":
            value = {_b64(field): _b64(item) for field, item in client.hgetall(raw_key).items()}
        elif kind == "set":
            value = sorted(_b64(item) for item in client.smembers(raw_key))
        elif kind == "zset":
            value = [[_b64(member), score] for member, score in client.zrange(raw_key, 0, -1, withscores=True)]
        elif kind == "none":
            continue  # expired between SCAN and TYPE
        else:
            raise TransferRefused(f"Redis key {raw_key.decode()!r} is a {kind}, which the archive cannot hold")
        ttl_ms = client.pttl(raw_key)
        records.append({"key": relative, "type": kind, "value": value, "ttl_ms": ttl_ms if ttl_ms > 0 else None})
    return records


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _archive_write(*, path: Path, manifest: dict, folder: Path, redis_keys: list[dict]) -> None:
    partial = path.with_name(path.name + ".partial")  # the archive appears whole or not at all
    with tarfile.open(partial, "w:gz") as archive:
        _archive_add_bytes(archive, "manifest.json", json.dumps(manifest, default=_json_value, indent=1).encode())
        for table in manifest["tables"]:
            archive.add(folder / f"{table['name']}.copy", arcname=f"tables/{table['name']}.copy")
        lines = "".join(json.dumps(record) + "\n" for record in redis_keys)
        _archive_add_bytes(archive, "redis.jsonl", lines.encode())
    partial.replace(path)


def _json_value(value):
    # Whole microseconds (Django's JSON encoder keeps milliseconds only): a due time or creation time
    # comes back exactly as it was.
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in a manifest")


def _archive_add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(timezone.now().timestamp())
    archive.addfile(info, io.BytesIO(data))


# --- import ---------------------------------------------------------------------------------------------------


def tenant_import(*, path: Path) -> Tenant:
    """Restores an archive written by tenant_export into this database and Redis; returns the tenant.

    Refused (TransferRefused, nothing written) if the archive is not one, if its slug, schema, a domain or
    Redis keys of the slug exist here, or if its migrations differ from this database's.
    """
    from tenants.services import _tenant_queue_and_slots_open, tenant_slug_validate

    try:
        archive = tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError) as error:
        raise TransferRefused(f"not a tenant archive: {error}") from error
    with archive:
        manifest = _manifest_read(archive)
        slug = manifest["slug"]
        tenant_slug_validate(slug)
        _import_refusals(manifest)
        redis_keys = [json.loads(line) for line in archive.extractfile("redis.jsonl").read().decode().splitlines()]
        try:
            with transaction.atomic():
                tenant = _public_rows_insert(manifest)  # copies the template into the new schema
                with connection.cursor() as cursor:
                    _tables_fill(cursor, archive, manifest)
                    _sequences_set(cursor, manifest)
                _redis_import(schema_name=slug, records=redis_keys)
        except BaseException:
            _redis_forget(schema_name=slug, records=redis_keys)
            raise
    queued = any(record["key"] == "creations" for record in redis_keys)
    _tenant_queue_and_slots_open(schema_name=slug, concurrency=tenant.concurrency)
    if queued:
        from tenants.work import CREATIONS_ACTIVE_KEY

        # Scored as long overdue: the dispatcher's next pass sends the tenant a drain.
        get_redis().zadd(CREATIONS_ACTIVE_KEY, {slug: 0})
    logger.info("tenant imported: %s from %s", slug, path)
    return tenant


def _manifest_read(archive: tarfile.TarFile) -> dict:
    try:
        manifest = json.loads(archive.extractfile("manifest.json").read())
    except (KeyError, AttributeError, ValueError) as error:
        raise TransferRefused("not a tenant archive: no readable manifest.json") from error
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise TransferRefused("not a tenant archive: unknown format")
    if manifest.get("version") != ARCHIVE_VERSION:
        raise TransferRefused(f"archive version {manifest.get('version')!r}; this code reads {ARCHIVE_VERSION}")
    return manifest


def _import_refusals(manifest: dict) -> None:
    from django.conf import settings

    slug = manifest["slug"]
    if Tenant.objects.filter(schema_name=slug).exists() or schema_exists(slug):
        raise TransferRefused(f"a tenant {slug!r} exists in this database")
    domains = [row["domain"] for row in manifest["public_rows"]["domains"]]
    taken = list(Domain.objects.filter(domain__in=domains).values_list("domain", flat=True))
    if taken:
        raise TransferRefused(f"domain(s) {', '.join(sorted(taken))} exist in this database")
    if next(get_redis().scan_iter(match=tenant_key(slug, "*"), count=5000), None) is not None:
        raise TransferRefused(f"Redis already holds keys of {slug!r} (sociomile:{slug}:*)")
    template = settings.TENANT_TEMPLATE_SCHEMA
    if not schema_exists(template):
        raise TransferRefused(f"no {template} schema here: run manage.py migrate_schemas first")
    with connection.cursor() as cursor:
        here = {"tenant": _migrations_applied(cursor, template), "public": _migrations_applied(cursor, get_public_schema_name())}
    for scope in ("tenant", "public"):
        theirs = {tuple(row) for row in manifest["migrations"][scope]}
        ours = {tuple(row) for row in here[scope]}
        if theirs != ours:
            only_theirs = sorted(f"{app}.{name}" for app, name in theirs - ours)
            only_ours = sorted(f"{app}.{name}" for app, name in ours - theirs)
            raise TransferRefused(
                f"the {scope} schema's migrations differ: only in the archive {only_theirs[:10]}, only here "
                f"{only_ours[:10]}. Deploy the same code (manage.py migrate_schemas) on both sides first"
            )


def _public_rows_insert(manifest: dict) -> Tenant:
    rows = manifest["public_rows"]
    fields = dict(rows["tenant"])
    created_at = fields.pop("created_at", None)
    fields["deleting_since"] = None
    tenant = Tenant(**fields)
    tenant.save(verbosity=0)  # creates the schema: a copy of this database's template
    if created_at is not None:  # auto_now_add set it to now: the tenant is as old as it was
        Tenant.objects.filter(id=tenant.id).update(created_at=created_at)
    Domain.objects.bulk_create([Domain(tenant=tenant, **row) for row in rows["domains"]])
    TenantWork.objects.bulk_create([TenantWork(tenant=tenant, **row) for row in rows["work"]])
    return tenant


def _tables_fill(cursor, archive: tarfile.TarFile, manifest: dict) -> None:
    schema = manifest["slug"]
    here = {table["name"]: table["columns"] for table in _tables_in_order(cursor, schema)}
    theirs = {table["name"]: table["columns"] for table in manifest["tables"]}
    if here != theirs:  # same migrations, different tables: a schema changed by hand on one side
        differ = sorted(name for name in here.keys() | theirs.keys() if here.get(name) != theirs.get(name))
        raise TransferRefused(f"tables differ from this database's template: {differ[:10]}")
    # The template's own rows (migrations, content types...) are replaced by the tenant's.
    cursor.execute(f"TRUNCATE {', '.join(_qualified(schema, name) for name in here)}")
    for table in manifest["tables"]:
        source = archive.extractfile(f"tables/{table['name']}.copy")
        with cursor.copy(f"COPY {_qualified(schema, table['name'])} ({_column_list(table['columns'])}) FROM STDIN") as copy:
            while chunk := source.read(_COPY_CHUNK):
                copy.write(chunk)
        cursor.execute(f"SELECT count(*) FROM {_qualified(schema, table['name'])}")
        (count,) = cursor.fetchone()
        if count != table["rows"]:
            raise TransferRefused(f"table {table['name']}: {count} rows restored, the archive counted {table['rows']}")


def _sequences_set(cursor, manifest: dict) -> None:
    """Each sequence where the source left it, and never at or below its column's largest value."""
    schema = manifest["slug"]
    # Only this schema's own sequences and columns, as the target's catalog names them: the names are then put
    # into SQL, and an archive is a file that may have been edited.
    here = {(row["name"], row["table"], row["column"]) for row in _sequences(cursor, schema)}
    for sequence in manifest["sequences"]:
        if (sequence["name"], sequence["table"], sequence["column"]) not in here:
            raise TransferRefused(f"sequence {sequence['name']!r} of the archive is not in this database's template")
        last_value, is_called = sequence["last_value"], sequence["is_called"]
        if sequence["table"] and sequence["column"]:
            cursor.execute(
                f"SELECT max({connection.ops.quote_name(sequence['column'])}) "
                f"FROM {_qualified(schema, sequence['table'])}"
            )
            (largest,) = cursor.fetchone()
            if largest is not None and (largest > last_value or (largest == last_value and not is_called)):
                last_value, is_called = largest, True
        cursor.execute("SELECT setval(%s, %s, %s)", [_qualified(schema, sequence["name"]), last_value, is_called])


def _redis_import(*, schema_name: str, records: list[dict]) -> None:
    client = get_redis()
    with client.pipeline(transaction=True) as pipe:
        for record in records:
            key = tenant_key(schema_name, record["key"])
            value = record["value"]
            kind = record["type"]
            if kind == "string":
                pipe.set(key, _unb64(value))
            elif kind == "list":
                pipe.rpush(key, *[_unb64(item) for item in value])
            elif kind == "hash":
                pipe.hset(key, mapping={_unb64(field): _unb64(item) for field, item in value.items()})
            elif kind == "set":
                pipe.sadd(key, *[_unb64(item) for item in value])
            elif kind == "zset":
                pipe.zadd(key, {_unb64(member): score for member, score in value})
            else:
                raise TransferRefused(f"Redis key {record['key']!r}: unknown type {kind!r}")
            if record["ttl_ms"]:
                pipe.pexpire(key, record["ttl_ms"])
        pipe.execute()


def _redis_forget(*, schema_name: str, records: list[dict]) -> None:
    keys = [tenant_key(schema_name, record["key"]) for record in records]
    if keys:
        get_redis().delete(*keys)


def _unb64(value: str) -> bytes:
    return base64.b64decode(value)


