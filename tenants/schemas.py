"""Copying the migrated template schema into a new tenant's schema, in time that does not grow with tenants.

django-tenants' `clone_schema` rebuilds each table's DDL in PL/pgSQL (`pg_get_tabledef`) with queries
that scan the whole catalog: every tenant adds ~100 relations and ~600 pg_attribute rows, so one clone
went from ~1 s with a few tenants to 4-7 s with 60. Here every catalog read is limited to the template's
own objects (by namespace, or through the per-table indexes of pg_attribute/pg_constraint/pg_index),
and the tables themselves are made by PostgreSQL (`CREATE TABLE ... (LIKE ...)`), so the cost follows
the template's size only.

The DDL is read with the search path set to the template alone, so PostgreSQL leaves the template's own
names unqualified and qualifies everything else (`public.gin_trgm_ops`), and it is run with the search
path set to the new schema: foreign keys, indexes and identity sequences land in, and point into, the
new schema, without any rewriting of SQL text.
"""

from collections.abc import Iterable

from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import quote_schema_name

# What lives in a schema, found through pg_depend's index on the referenced object: every table, view,
# sequence, function, type... records a dependency on its namespace. pg_class has no index on the
# namespace alone, and a scan of it grows with every tenant.
_SCHEMA_OBJECTS_CTE = """
WITH objects AS (
    SELECT d.classid, d.objid FROM pg_depend d
     WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = %(schema)s::regnamespace AND d.refobjsubid = 0
), relations AS (
    SELECT c.* FROM objects o JOIN pg_class c ON c.oid = o.objid WHERE o.classid = 'pg_class'::regclass
)
"""

# `schema_clone` copies tables with identity columns, their indexes, keys, foreign keys, CHECKs, comments
# and rows. Anything else in the template (a view, a function, a type, a serial or free-standing sequence,
# a trigger, a policy, a rule, a partitioned or unlogged table, table options) is reported here, and the
# caller falls back to a slower but general copy.
_UNSUPPORTED_SQL = _SCHEMA_OBJECTS_CTE + """
SELECT pg_describe_object(o.classid, o.objid, 0) FROM objects o WHERE o.classid <> 'pg_class'::regclass
UNION ALL
SELECT pg_describe_object('pg_class'::regclass, c.oid, 0) FROM relations c WHERE c.relkind NOT IN ('r', 'S')
UNION ALL
SELECT format('%%s (persistence %%s, options %%s, row security %%s, rules %%s)', pg_describe_object('pg_class'::regclass, c.oid, 0),
              c.relpersistence, c.reloptions, c.relrowsecurity, c.relhasrules)
  FROM relations c
 WHERE c.relkind = 'r' AND (c.relpersistence <> 'p' OR c.reloptions IS NOT NULL OR c.relrowsecurity OR c.relhasrules)
UNION ALL
SELECT pg_describe_object('pg_class'::regclass, c.oid, 0) || ' (not an identity column''s)'
  FROM relations c
 WHERE c.relkind = 'S'
   AND NOT EXISTS (SELECT FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i')
UNION ALL
SELECT pg_describe_object('pg_trigger'::regclass, t.oid, 0)
  FROM relations c JOIN pg_trigger t ON t.tgrelid = c.oid WHERE NOT t.tgisinternal
UNION ALL
SELECT pg_describe_object('pg_policy'::regclass, p.oid, 0) FROM relations c JOIN pg_policy p ON p.polrelid = c.oid
"""

_TABLES_SQL = _SCHEMA_OBJECTS_CTE + """
SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class') FROM relations c WHERE c.relkind = 'r' ORDER BY c.relname
"""

# Columns that take copied rows (generated columns compute their own), per table.
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname
  FROM pg_attribute a
 WHERE a.attrelid = ANY(%(tables)s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY a.attrelid, a.attnum
"""

# Identity columns and their sequences, made again with the same name, type and options: LIKE's copy
# of an identity names its sequence after the table (a renamed table's keeps its old name) and makes it
# bigint even for an integer column.
_IDENTITY_COLUMNS_SQL = """
SELECT c.relname, a.attname, a.attidentity, s.relname, q.seqstart, q.seqincrement, q.seqmin, q.seqmax, q.seqcache, q.seqcycle
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum
                  AND d.classid = 'pg_class'::regclass AND d.deptype = 'i'
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_sequence q ON q.seqrelid = s.oid
 WHERE a.attrelid = ANY(%(tables)s) AND a.attidentity <> '' AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum
"""

# Per-column statistics targets (`ALTER COLUMN ... SET STATISTICS`, set by migrations such as
# conversations.0005): LIKE does not copy them, and the migrations that set them are recorded as applied
# in the copy. (PostgreSQL 17 stores "not set" as NULL rather than -1: both fail the comparison.)
_STATISTICS_SQL = """
SELECT c.relname, a.attname, a.attstattarget
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE a.attrelid = ANY(%(tables)s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attstattarget > 0
 ORDER BY c.relname, a.attnum
"""

# Keys and foreign keys (CHECK constraints come with LIKE); foreign keys last: they need the referenced
# tables' primary and unique keys in place.
_CONSTRAINTS_SQL = """
SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
 WHERE k.conrelid = ANY(%(tables)s) AND k.contype IN ('p', 'u', 'x', 'f')
 ORDER BY k.contype = 'f', c.relname, k.conname
"""

# Indexes of their own (a primary key, unique or exclusion constraint brings its index along).
# pg_get_indexdef always qualifies the table (`ON <schema>.<table> USING`), so it comes with that prefix.
_INDEXES_SQL = """
SELECT pg_get_indexdef(i.indexrelid),
       quote_ident(n.nspname) || '.' || quote_ident(t.relname), quote_ident(t.relname)
  FROM pg_index i
  JOIN pg_class x ON x.oid = i.indexrelid
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE i.indrelid = ANY(%(tables)s)
   AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid)
 ORDER BY x.relname
"""


def _quote(name: str) -> str:
    # An identifier read from the catalog, quoted with its own double quotes escaped.
    return '"' + name.replace('"', '""') + '"'


def schema_clone_unsupported(*, source: str) -> list[str]:
    """What `schema_clone` cannot copy from `source` (empty: it copies the schema completely)."""
    with connection.cursor() as cursor:
        cursor.execute(_UNSUPPORTED_SQL, {"schema": quote_schema_name(source)})
        return [row[0] for row in cursor.fetchall()]


def schema_clone(*, source: str, target: str) -> None:
    """Creates schema `target` as a copy of `source`: tables, identity columns and their sequences (fresh,
    or past the copied rows), indexes, constraints, comments, column statistics targets and rows.

    Atomic: a failure leaves no `target` behind, and the caller's transaction usable. The caller checks
    `schema_clone_unsupported` first.
    """
    source_sql, target_sql = quote_schema_name(source), quote_schema_name(target)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('search_path')")
        search_path = cursor.fetchone()[0]
        try:
            with transaction.atomic():
                # Read with only the template on the path: its names come back unqualified, all others qualified.
                cursor.execute(f"SET search_path = {source_sql}")
                statements = _schema_clone_statements(cursor=cursor, source_sql=source_sql)
                cursor.execute(f"CREATE SCHEMA {target_sql}")
                cursor.execute(f"SET search_path = {target_sql}")
                # One round trip: psycopg sends a query without parameters as a simple query.
                cursor.execute(";\n".join(statements))
        finally:
            # django-tenants only issues SET search_path when it thinks the schema changed: leave it as found.
            cursor.execute("SELECT set_config('search_path', %s, false)", [search_path])


def schema_clone_many(*, source: str, targets: list[str], per_transaction: int = 25) -> None:
    """Creates every schema of `targets` as a copy of `source`, as `schema_clone` does, reading the source's
    catalog once: for building thousands of tenants' schemas at once (benchmarks, scale tests).

    Each group of `per_transaction` schemas is one transaction (a failure leaves none of that group). Every
    relation a transaction creates holds a lock until it commits, and PostgreSQL's lock table holds
    max_locks_per_transaction x max_connections entries: ~100 relations a schema, so keep groups small.
    Must not be called inside a transaction (each group commits).
    """
    source_sql = quote_schema_name(source)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('search_path')")
        search_path = cursor.fetchone()[0]
        try:
            cursor.execute(f"SET search_path = {source_sql}")
            script = ";\n".join(_schema_clone_statements(cursor=cursor, source_sql=source_sql))
            for start in range(0, len(targets), per_transaction):
                with transaction.atomic():
                    for target in targets[start : start + per_transaction]:
                        target_sql = quote_schema_name(target)
                        cursor.execute(f"CREATE SCHEMA {target_sql}; SET LOCAL search_path = {target_sql};\n{script}")
        finally:
            cursor.execute("SELECT set_config('search_path', %s, false)", [search_path])


def _schema_clone_statements(*, cursor, source_sql: str) -> list[str]:
    """The SQL that makes the clone, run with the search path set to the new schema."""
    cursor.execute(_TABLES_SQL, {"schema": source_sql})
    tables = cursor.fetchall()
    table_ids = [oid for oid, _, _ in tables]
    names = {oid: name for oid, name, _ in tables}
    cursor.execute(_COLUMNS_SQL, {"tables": table_ids})
    columns: dict[int, list[str]] = {}
    for oid, column in cursor.fetchall():
        columns.setdefault(oid, []).append(_quote(column))
    cursor.execute(_IDENTITY_COLUMNS_SQL, {"tables": table_ids})
    identities = cursor.fetchall()
    cursor.execute(_STATISTICS_SQL, {"tables": table_ids})
    statistics = cursor.fetchall()
    cursor.execute(_CONSTRAINTS_SQL, {"tables": table_ids})
    constraints = cursor.fetchall()
    cursor.execute(_INDEXES_SQL, {"tables": table_ids})
    indexes = []
    for definition, qualified, table in cursor.fetchall():
        on_template, on_target = f" ON {qualified} USING ", f" ON {table} USING "
        if on_template not in definition:
            raise RuntimeError(f"unexpected index definition, not copied: {definition}")
        indexes.append(definition.replace(on_template, on_target, 1))

    statements = []
    for oid, name, comment in tables:
        # LIKE copies columns, types, collations, defaults, NOT NULL, CHECK constraints (by name, as parsed
        # trees: a CHECK printed and parsed again can come back as a different tree), storage, compression
        # and column comments. Keys and indexes are made below under their own names (LIKE would rename
        # them), identities too (see _IDENTITY_COLUMNS_SQL).
        statements.append(
            f"CREATE TABLE {_quote(name)} (LIKE {source_sql}.{_quote(name)} "
            "INCLUDING ALL EXCLUDING INDEXES EXCLUDING STATISTICS EXCLUDING IDENTITY)"
        )
        if comment is not None:
            statements.append(f"COMMENT ON TABLE {_quote(name)} IS {_literal(comment)}")
    for table, column, generated, sequence, start, increment, minimum, maximum, cache, cycle in identities:
        # The sequence takes the column's type, as when Django's migration made it.
        statements.append(
            f"ALTER TABLE {_quote(table)} ALTER COLUMN {_quote(column)} ADD GENERATED "
            f"{'ALWAYS' if generated == 'a' else 'BY DEFAULT'} AS IDENTITY (SEQUENCE NAME {_quote(sequence)} "
            f"START {start} INCREMENT {increment} MINVALUE {minimum} MAXVALUE {maximum} "
            f"CACHE {cache} {'CYCLE' if cycle else 'NO CYCLE'})"
        )
    for oid in table_ids:
        # Rows before keys, foreign keys and indexes: no order between tables to respect, one index build each.
        if oid in columns:
            column_list = ", ".join(columns[oid])
            statements.append(
                f"INSERT INTO {_quote(names[oid])} ({column_list}) OVERRIDING SYSTEM VALUE "
                f"SELECT {column_list} FROM {source_sql}.{_quote(names[oid])}"
            )
    for table, column, *_ in identities:
        # Past the copied rows (content types, permissions, migrations), fresh where there are none: as after
        # a migration run, whatever the template's own sequences went through.
        statements.append(
            f"SELECT setval(pg_get_serial_sequence({_literal(_quote(table))}, {_literal(column)}), max({_quote(column)})) "
            f"FROM {_quote(table)} HAVING max({_quote(column)}) IS NOT NULL"
        )
    for table, column, target in statistics:
        statements.append(f"ALTER TABLE {_quote(table)} ALTER COLUMN {_quote(column)} SET STATISTICS {int(target)}")
    for table, constraint, definition in constraints:
        statements.append(f"ALTER TABLE {_quote(table)} ADD CONSTRAINT {_quote(constraint)} {definition}")
    statements.extend(indexes)
    return statements


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_migration_nodes: frozenset[tuple[str, str]] | None = None
_migration_replacements: dict[tuple[str, str], list[tuple[str, str]]] = {}


def migration_graph() -> tuple[frozenset[tuple[str, str]], dict[tuple[str, str], list[tuple[str, str]]]]:
    """Every migration of the code, and what each squashed one replaces: read from disk once per process
    (the code does not change under it)."""
    global _migration_nodes, _migration_replacements
    if _migration_nodes is None:
        loader = MigrationLoader(None, ignore_no_migrations=True)
        _migration_replacements = {key: list(migration.replaces) for key, migration in loader.replacements.items()}
        _migration_nodes = frozenset(loader.graph.nodes)
    return _migration_nodes, _migration_replacements


def schema_migrations_compare(*, applied: Iterable[tuple[str, str]]) -> tuple[tuple, tuple]:
    """(missing, unknown) for a schema whose django_migrations holds `applied`: the code's migrations it
    lacks (a squash counts as applied when all it replaces is), and its rows the code does not know."""
    nodes, replacements = migration_graph()
    applied = set(applied)
    replaced = {old for olds in replacements.values() for old in olds}
    missing = sorted(
        node for node in nodes
        if node not in applied and not (node in replacements and all(r in applied for r in replacements[node]))
    )  # fmt: skip
    unknown = sorted(row for row in applied if row not in nodes and row not in replaced)
    return tuple(missing), tuple(unknown)


def schema_migrations_pending(*, schema: str) -> list[tuple[str, str]]:
    """Migrations of the code not recorded as applied in `schema` (one query; the graph is cached)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT app, name FROM {quote_schema_name(schema)}.django_migrations")
        missing, _ = schema_migrations_compare(applied=cursor.fetchall())
    return list(missing)
