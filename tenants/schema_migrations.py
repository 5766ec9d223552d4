"""Deploys at many tenants: which schemas lack a migration, read in a few queries, and migrating only those,
in parallel, with a progress line.

django-tenants' `migrate_schemas` runs Django's `migrate` in every schema, and each run loads the migration
graph, checks the schema's history and builds the project state: ~0.6 s a schema with nothing to apply,
11 minutes over 1,000 schemas. Whether a schema lacks anything is a question about its `django_migrations`
rows only, and PostgreSQL answers it for hundreds of schemas in one query: each schema's applied set is
reduced to a count and a digest, schemas with the same digest have the same applied set, and each distinct
set is compared once with the code's migration graph.
"""

import dataclasses
import logging
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from django.db import connection, connections
from django_tenants.migration_executors.base import run_migrations
from django_tenants.utils import quote_schema_name

from tenants.schemas import schema_migrations_compare

logger = logging.getLogger(__name__)

# Schemas per query. Each one read takes a lock on its django_migrations table until the query's
# transaction ends, and PostgreSQL's lock table holds max_locks_per_transaction (64) x max_connections
# entries for the whole server: a few hundred at a time leaves room for everyone else.
STATE_BATCH_SIZE = 250


@dataclasses.dataclass(frozen=True)
class SchemaMigrationState:
    """A schema's recorded migrations against the code's: what it lacks and what the code does not know."""

    exists: bool
    missing: tuple[tuple[str, str], ...] = ()
    # Recorded as applied, unknown to the code: newer code that was rolled back, or a migration file deleted
    # without a squash. Django ignores such rows; a deploy reports them.
    unknown: tuple[tuple[str, str], ...] = ()

    @property
    def is_up_to_date(self) -> bool:
        return self.exists and not self.missing


def schemas_migration_state(*, schemas: list[str]) -> dict[str, SchemaMigrationState]:
    """Each schema's migration state, in one query per STATE_BATCH_SIZE schemas plus one per distinct
    applied set. A schema that does not exist, or has no django_migrations table, is `exists=False`."""
    recorded = _schemas_with_migrations_table(schemas=schemas)
    digests: dict[str, str] = {}
    representative: dict[str, str] = {}  # digest -> one schema with that applied set
    for start in range(0, len(recorded), STATE_BATCH_SIZE):
        batch = recorded[start : start + STATE_BATCH_SIZE]
        query = "\nUNION ALL\n".join(
            "SELECT %s, count(*)::text || ':' || md5(coalesce(string_agg(app || '.' || name, ',' ORDER BY app, name), ''))"
            f" FROM {quote_schema_name(schema)}.django_migrations"
            for schema in batch
        )
        with connection.cursor() as cursor:
            cursor.execute(query, batch)
            for schema, digest in cursor.fetchall():
                digests[schema] = digest
                representative.setdefault(digest, schema)

    by_digest: dict[str, SchemaMigrationState] = {}
    for digest, schema in representative.items():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT app, name FROM {quote_schema_name(schema)}.django_migrations")
            missing, unknown = schema_migrations_compare(applied=cursor.fetchall())
        by_digest[digest] = SchemaMigrationState(exists=True, missing=missing, unknown=unknown)
    absent = SchemaMigrationState(exists=False)
    return {schema: by_digest[digests[schema]] if schema in digests else absent for schema in schemas}


def _schemas_with_migrations_table(*, schemas: list[str]) -> list[str]:
    # pg_class is looked up by its (relname, relnamespace) index: one row per schema that has the table.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = 'django_migrations' AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
            """,
            [list(schemas)],
        )
        present = {row[0] for row in cursor.fetchall()}
    return [schema for schema in schemas if schema in present]


class SchemaMigrationFailed(Exception):
    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        names = ", ".join(sorted(failures)[:10]) + (" ..." if len(failures) > 10 else "")
        super().__init__(f"{len(failures)} schema(s) failed to migrate: {names}")


class ProgressLine:
    """`migrating: n/N schemas (r/s, ETA s)` at most once a second, and once at the end."""

    def __init__(self, *, total: int, write: Callable[[str], None] | None, every_seconds: float = 1.0):
        self.total, self.write, self.every_seconds = total, write, every_seconds
        self.done = 0
        self.started = self.last_written = time.monotonic()

    def advance(self) -> None:
        self.done += 1
        if self.write is None:
            return
        now = time.monotonic()
        if self.done == self.total or now - self.last_written >= self.every_seconds:
            self.last_written = now
            elapsed = max(now - self.started, 1e-6)
            rate = self.done / elapsed
            remaining = (self.total - self.done) / rate if rate else 0.0
            self.write(f"migrating: {self.done}/{self.total} schemas ({rate:.1f}/s, ETA {remaining:.0f} s)")


def schemas_migrate(
    *,
    schemas: list[str],
    args: tuple,
    options: dict,
    processes: int,
    write: Callable[[str], None] | None,
    after_each: Callable[[str], None] | None = None,
) -> None:
    """Runs Django's migrate in each schema (django-tenants' per-schema runner), `processes` at a time.

    `write` takes the progress line (None: no progress line). `after_each(schema)` runs in the same process once the schema is migrated. On a failure no further
    schema is started, the running ones finish, and SchemaMigrationFailed names the failed schemas: one
    migration that breaks on the first tenant would break on all of them.
    """
    if not schemas:
        return
    progress = ProgressLine(total=len(schemas), write=write)
    failures: dict[str, str] = {}
    if processes <= 1:
        for index, schema in enumerate(schemas):
            _, error = _schema_migrate(args, options, "standard", schema, index, len(schemas), after_each, True)
            progress.advance()
            if error:
                failures[schema] = error
                break
    else:
        _schemas_migrate_in_processes(
            schemas=schemas, args=args, options=options, processes=processes,
            progress=progress, failures=failures, after_each=after_each,
        )  # fmt: skip
    connection.set_schema_to_public()
    if failures:
        raise SchemaMigrationFailed(failures)


def _schemas_migrate_in_processes(*, schemas, args, options, processes, progress, failures, after_each) -> None:
    # Forked children inherit the loaded apps and settings (as django-tenants' multiprocessing executor);
    # no connection may be shared with them, so the parent's are closed first.
    connections.close_all()
    context = multiprocessing.get_context("fork")
    pending = iter(enumerate(schemas))
    running: set[Future] = set()
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:

        def submit_next() -> None:
            item = next(pending, None)
            if item is not None:
                index, schema = item
                running.add(pool.submit(_schema_migrate, args, options, "multiprocessing", schema, index,
                                        len(schemas), after_each, False))  # fmt: skip

        for _ in range(processes):
            submit_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.discard(future)
                schema, error = future.result()
                progress.advance()
                if error:
                    failures[schema] = error
                elif not failures:
                    submit_next()


def _schema_migrate(args, options, codename, schema, index, count, after_each, allow_atomic) -> tuple[str, str | None]:
    try:
        run_migrations(args, options, codename, schema, allow_atomic=allow_atomic, idx=index, count=count)
        if after_each is not None:
            after_each(schema)
    except Exception as error:  # reported by the parent with the schema's name; the traceback goes to stderr
        logger.exception("schema %s: migration failed", schema)
        print(f"[{schema}] migration failed: {error.__class__.__name__}: {error}", file=sys.stderr, flush=True)
        return schema, f"{error.__class__.__name__}: {error}"
    finally:
        connection.set_schema_to_public()
    return schema, None
