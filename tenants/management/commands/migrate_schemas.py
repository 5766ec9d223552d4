import os

from django.conf import settings
from django.core.management.base import CommandError
from django_tenants.management.commands import SyncCommon
from django_tenants.management.commands.migrate_schemas import GET_EXECUTOR_FUNCTION, MigrateSchemasCommand
from django_tenants.utils import get_public_schema_name, schema_context

from scheduler.services import scheduler_ensure
from tenants.models import Tenant
from tenants.schema_migrations import SchemaMigrationFailed, schemas_migrate, schemas_migration_state
from tenants.services import tenant_template_sync

# Options that change what a run does (a plan, a check, fake records, history pruning, one app or one
# migration): those runs go through django-tenants' command for every schema, as before.
_SPECIAL_OPTIONS = ("app_label", "migration_name", "fake", "fake_initial", "plan", "check_unapplied", "prune", "run_syncdb")


def _tenant_hooks(schema_name: str) -> None:
    # Per-tenant work a migration can make necessary (a tenant made before a per-tenant job existed). A
    # schema with nothing to migrate was provisioned, or last migrated, by a run that already did it.
    with schema_context(schema_name):
        scheduler_ensure()


class Command(MigrateSchemasCommand):
    """django-tenants' `migrate_schemas`, which also migrates the template schema new tenants are cloned
    from, and migrates only the schemas (public, template, tenants) that lack a migration
    (tenants.schema_migrations): all schemas' recorded migrations are read in a few queries and compared
    with the code's, so a deploy with nothing to apply takes seconds at thousands of tenants. With `--executor=multiprocessing`, schemas are
    migrated TENANT_MULTIPROCESSING_MAX_PROCESSES at a time; a progress line goes to stdout either way."""

    def handle(self, *args, **options):
        if options.get("schema_name") or any(options.get(name) for name in _SPECIAL_OPTIONS):
            return self._handle_every_schema(*args, **options)
        SyncCommon.handle(self, *args, **options)
        self.verbosity = options.get("verbosity", 1)
        public, template = get_public_schema_name(), settings.TENANT_TEMPLATE_SCHEMA
        # The public schema and the template, like every tenant schema, skip Django's migrate when they lack
        # nothing: its table introspection scans the whole catalog, which every tenant makes bigger.
        if self.sync_public:
            if self._is_up_to_date(public):
                self._notice_line("public schema: up to date")
            else:
                GET_EXECUTOR_FUNCTION(codename=self.executor)(self.args, self.options).run_migrations(tenants=[public])
        if not self.sync_tenant:
            return
        # The template first: tenants provisioned while the others migrate are copies of the new code's schema.
        if self._is_up_to_date(template):
            self._notice_line(f"template schema {template}: up to date")
        else:
            tenant_template_sync(verbosity=self.verbosity)
        schemas = list(Tenant.objects.exclude(schema_name=public).order_by("id").values_list("schema_name", flat=True))
        states = schemas_migration_state(schemas=schemas)
        self._report_unknown(states)
        stale = [schema for schema in schemas if not states[schema].is_up_to_date]
        self._notice_line(f"tenant schemas: {len(schemas)}, up to date: {len(schemas) - len(stale)}, to migrate: {len(stale)}")
        self._migrate(stale)

    def _is_up_to_date(self, schema: str) -> bool:
        state = schemas_migration_state(schemas=[schema])[schema]
        self._report_unknown({schema: state})
        return state.is_up_to_date

    def _notice_line(self, line: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(line)

    def _migrate(self, schemas: list[str]) -> None:
        executor = self.executor or os.environ.get("EXECUTOR", "standard")  # django-tenants' own default
        if executor not in ("standard", "multiprocessing"):
            # Another executor of django-tenants' (subprocess): it runs the stale schemas its own way.
            GET_EXECUTOR_FUNCTION(codename=executor)(self.args, self.options).run_migrations(tenants=schemas)
            for schema in schemas:
                _tenant_hooks(schema)
            return
        processes = getattr(settings, "TENANT_MULTIPROCESSING_MAX_PROCESSES", 2) if executor == "multiprocessing" else 1
        try:
            schemas_migrate(schemas=schemas, args=self.args, options=self.options, processes=processes,
                            write=self.stdout.write if self.verbosity >= 1 else None, after_each=_tenant_hooks)  # fmt: skip
        except SchemaMigrationFailed as error:
            raise CommandError(str(error)) from error

    def _report_unknown(self, states) -> None:
        unknown = {schema: state.unknown for schema, state in states.items() if state.unknown}
        if not unknown:
            return
        examples = sorted({row for rows in unknown.values() for row in rows})
        names = sorted(unknown)
        self.stderr.write(
            f"{len(unknown)} schema(s) record migrations this code does not have (newer code rolled back, "
            f"or a migration file removed): {', '.join(f'{app}.{name}' for app, name in examples[:10])}; "
            f"schemas: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
        )

    def _handle_every_schema(self, *args, **options):
        super().handle(*args, **options)
        migrates_every_tenant = self.sync_tenant and not options.get("schema_name") and not options.get("app_label")
        if migrates_every_tenant:
            tenant_template_sync(verbosity=options.get("verbosity", 1))
            for schema_name in Tenant.objects.values_list("schema_name", flat=True):
                _tenant_hooks(schema_name)
