import logging

from django.conf import settings
from django.core.management import call_command
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, models
from django.db.models.functions import Upper
from django_tenants.clone import CloneSchema
from django_tenants.models import DomainMixin, TenantMixin
from django_tenants.utils import quote_schema_name, schema_exists

logger = logging.getLogger(__name__)

MAX_TENANT_CONCURRENCY = 64
DEFAULT_TENANT_CONCURRENCY = 3


class Tenant(TenantMixin):
    """A business using Sociomile. Its slug is its PostgreSQL schema name and its host's first label."""

    name = models.CharField(max_length=255)
    concurrency = models.PositiveSmallIntegerField(
        default=DEFAULT_TENANT_CONCURRENCY,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_TENANT_CONCURRENCY)],
        help_text="How many of this tenant's tasks may run at once across all workers.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by tenants.services.tenant_delete before anything is removed: from then on the tenant's host and the
    # platform API treat it as gone (404), and a second deletion finds nothing to delete.
    deleting_since = models.DateTimeField(null=True, blank=True, editable=False)

    # Schemas are created by tenants.services.tenant_create and dropped by tenant_delete.
    auto_create_schema = True
    auto_drop_schema = True

    class Meta:
        ordering = ["id"]
        # django-tenants checks a new schema name with `schema_name__iexact` (UPPER(...) = UPPER(...)).
        indexes = [models.Index(Upper("schema_name"), name="tenant_schema_name_upper_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.schema_name})"

    @property
    def slug(self) -> str:
        return self.schema_name

    def create_schema(self, check_if_exists=False, sync_schema=True, verbosity=1):
        """Copies the migrated template schema (tenants.schemas), then migrates the copy if the template was stale.

        Running every migration for each new tenant takes seconds and grows with the project; copying the
        template takes a fraction of that and stays flat as tenants are added. Whether anything is left to
        apply is read from the copy's own django_migrations against the code's migrations; if anything is,
        the real `migrate_schemas` runs (not a fake one), so a copy of a stale template is never missing a table.
        """
        from tenants.schemas import schema_clone, schema_clone_unsupported, schema_migrations_pending

        template = settings.TENANT_TEMPLATE_SCHEMA
        if not (sync_schema and template and schema_exists(template)):
            return super().create_schema(check_if_exists=check_if_exists, sync_schema=sync_schema, verbosity=verbosity)
        if check_if_exists and schema_exists(self.schema_name):
            return False
        unsupported = schema_clone_unsupported(source=template)
        if unsupported:
            # Correct but slow (its catalog queries grow with the number of tenants): see tenants.schemas.
            logger.warning("template %s has objects our copy does not handle (%s): using django-tenants' clone",
                           template, "; ".join(unsupported))  # fmt: skip
            CloneSchema().clone_schema(template, self.schema_name, "DATA")
            _column_statistics_copy(source=template, target=self.schema_name)
        else:
            schema_clone(source=template, target=self.schema_name)  # statistics targets included
        pending = schema_migrations_pending(schema=self.schema_name)
        if pending:
            logger.warning("template %s is behind the code (%d migrations, first %s.%s): migrating %s; "
                           "run `manage.py migrate_schemas` to bring it up to date",
                           template, len(pending), *pending[0], self.schema_name)  # fmt: skip
            call_command("migrate_schemas", tenant=True, schema_name=self.schema_name, interactive=False, verbosity=verbosity)
            connection.set_schema_to_public()
        return True


def _column_statistics_copy(*, source: str, target: str) -> None:
    """Gives django-tenants' clone the per-column statistics targets the template has (`ALTER COLUMN ... SET STATISTICS`,
    set by migrations such as conversations.0005): the clone copies tables, not those settings, and the
    migrations that set them are already recorded as applied in the clone."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, a.attname, a.attstattarget FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND a.attstattarget > 0
            """,
            [source],
        )
        for table, column, target_value in cursor.fetchall():
            cursor.execute(
                f"ALTER TABLE {quote_schema_name(target)}.{connection.ops.quote_name(table)} "
                f"ALTER COLUMN {connection.ops.quote_name(column)} SET STATISTICS %s" % int(target_value)
            )


class Domain(DomainMixin):
    def __str__(self) -> str:
        return self.domain


class TenantWork(models.Model):
    """One kind of background work a tenant has, and when it is next due (the due-work index, tenants.work).

    A row exists only while the tenant has that work: idle tenants have none, so the dispatcher's query over
    this table costs the same with 10 tenants or 10,000. Written from the tenant's schema in the same
    transaction as the change that made the work (the table is public; a tenant connection's search path
    reaches it). `version` goes up with every mark, so a task that settles the row can tell whether work
    arrived while it ran (tenants.work.tenant_work_settle).
    """

    class Kind(models.TextChoices):
        ASSIGNMENT = "assignment", "Assignment"
        OUTBOUND = "outbound", "Outbound send"
        COUNTS = "counts", "Counts reconcile"
        WEBHOOKS = "webhooks", "Webhook deliveries"
        EVENTS_RETENTION = "events_retention", "Events retention"
        SLA = "sla", "SLA breaches"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="work")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    due_at = models.DateTimeField()
    version = models.BigIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "kind"], name="tenant_work_unique_kind")]
        indexes = [models.Index(fields=["due_at"], name="tenant_work_due_idx")]

    def __str__(self) -> str:
        return f"{self.kind} due {self.due_at:%Y-%m-%d %H:%M:%S}"
