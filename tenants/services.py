import logging
import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import quote_schema_name, schema_context

from core.models import User
from core.services import user_create
from scheduler.services import scheduler_ensure, scheduler_remove
from tenants import queues
from tenants.models import MAX_TENANT_CONCURRENCY, Domain, Tenant

logger = logging.getLogger(__name__)

# A slug is a PostgreSQL schema name, a DNS label and part of queue and Redis key names: keep it plain.
SLUG_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def tenant_slug_validate(slug: str) -> None:
    if not SLUG_PATTERN.match(slug):
        raise ValidationError(
            {"slug": ["Use 1-40 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."]}
        )
    if slug in settings.TENANT_RESERVED_SLUGS:
        raise ValidationError({"slug": [f'"{slug}" is reserved.']})


def tenant_domain_name(*, slug: str) -> str:
    return f"{slug}.{settings.BASE_DOMAIN}"


def tenant_create(*, name: str, slug: str, admin_email: str, admin_password: str, concurrency: int = 3) -> Tenant:
    """Provisions a tenant: schema (migrated), domain, its first admin user, then its queue and consumers.

    All database work is one transaction: a bad admin password or a duplicate slug leaves no schema,
    no row and no user behind. Workers are told to consume the new queue once the tenant is committed.
    """
    tenant_slug_validate(slug)
    if not 1 <= concurrency <= MAX_TENANT_CONCURRENCY:
        raise ValidationError({"concurrency": [f"Must be between 1 and {MAX_TENANT_CONCURRENCY}."]})
    if Tenant.objects.filter(schema_name=slug).exists():
        raise ValidationError({"slug": ["A tenant with this slug already exists."]})
    try:
        with transaction.atomic():
            tenant = Tenant(schema_name=slug, name=name, concurrency=concurrency)
            tenant.save(verbosity=0)  # creates and migrates the schema (django-tenants)
            Domain.objects.create(domain=tenant_domain_name(slug=slug), tenant=tenant, is_primary=True)
            with schema_context(slug):
                user_create(email=admin_email, password=admin_password, role=User.Role.ADMIN, name="Administrator")
                scheduler_ensure()  # its outbound job (setting and celery-beat entry), running from now on
    except IntegrityError as error:
        # Two creations of one slug at once: the unique index decides, the loser gets a 400.
        raise ValidationError({"slug": ["A tenant with this slug already exists."]}) from error
    transaction.on_commit(lambda: queues.tenant_queue_open(schema_name=slug))
    logger.info("tenant created: %s", slug)
    return tenant


def tenant_delete(*, tenant: Tenant) -> None:
    """Deprovisions a tenant: stops its consumers, drops its schema and domains, removes its queue."""
    schema_name = tenant.schema_name
    with transaction.atomic():
        scheduler_remove(schema_name=schema_name)  # its celery-beat entry lives in the public schema
        tenant.delete(force_drop=True)  # DROP SCHEMA ... CASCADE, then the row (domains cascade)
    transaction.on_commit(lambda: queues.tenant_queue_close(schema_name=schema_name))
    logger.info("tenant deleted: %s", schema_name)


def tenant_template_sync(*, verbosity: int = 0) -> None:
    """Creates the template schema new tenants are cloned from, if missing, and migrates it."""
    from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

    template = settings.TENANT_TEMPLATE_SCHEMA
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_schema_name(template)}")
    call_command(MigrateSchemasCommand(), tenant=True, schema_name=template, interactive=False, verbosity=verbosity)
    connection.set_schema_to_public()


def tenant_event_publish(*, tenant: Tenant, payload: dict) -> uuid.UUID:
    """Publishes an event to the tenant's queue; the tenant's consumers persist it in its event log."""
    from conversations.tasks import inbound_event_record_task

    event_id = uuid.uuid4()
    with schema_context(tenant.schema_name):
        # Sent in the tenant's context: the task carries its schema and is routed to its queue.
        inbound_event_record_task.delay(str(event_id), payload, timezone.now().isoformat())
    return event_id
