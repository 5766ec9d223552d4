import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import quote_schema_name, schema_context

from core.exceptions import NotFound
from core.models import User, normalize_email
from core.redis import get_redis, tenant_key, tenant_keys_delete
from core.routing import routing_changed
from core.services import user_create, user_sign_in_unlock, user_token_revoke
from scheduler.services import scheduler_ensure
from tenants import concurrency as tenant_concurrency
from tenants import metrics as tenant_metrics
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
    """Provisions a tenant: schema (a copy of the migrated template), domain, first admin, then its queue and consumers.

    All database work is one transaction: a bad admin password or a duplicate slug leaves no schema,
    no row and no user behind. Workers are told to consume the new queue once the tenant is committed.
    """
    tenant_slug_validate(slug)
    if not 1 <= concurrency <= MAX_TENANT_CONCURRENCY:
        raise ValidationError({"concurrency": [f"Must be between 1 and {MAX_TENANT_CONCURRENCY}."]})
    if Tenant.objects.filter(schema_name=slug).exists():
        raise ValidationError({"slug": ["A tenant with this slug already exists."]})
    _admin_password_validate(email=admin_email, password=admin_password)
    # The admin's password is hashed (Argon2: as long as the schema copy) in a thread while the schema is
    # copied; the hash releases the GIL and the copy is PostgreSQL's work.
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenant-create-hash")
    try:
        password_hash = hashing.submit(make_password, admin_password)
        with transaction.atomic():
            tenant = Tenant(schema_name=slug, name=name, concurrency=concurrency)
            tenant.save(verbosity=0)  # creates the schema: a copy of the template (tenants.models)
            Domain.objects.create(domain=tenant_domain_name(slug=slug), tenant=tenant, is_primary=True)
            with schema_context(slug):
                user_create(email=admin_email, password=admin_password, password_hash=password_hash.result(),
                            role=User.Role.ADMIN, name="Administrator")  # fmt: skip
                scheduler_ensure()  # its outbound job's setting, running from now on (no beat entry: tenants.work)
    except IntegrityError as error:
        # Two creations of one slug at once: the unique index decides, the loser gets a 400.
        raise ValidationError({"slug": ["A tenant with this slug already exists."]}) from error
    finally:
        hashing.shutdown(wait=False)  # a failed creation answers at once; the thread ends with its hash
    transaction.on_commit(lambda: _tenant_queue_and_slots_open(schema_name=slug, concurrency=concurrency))
    logger.info("tenant created: %s", slug)
    return tenant


def _admin_password_validate(*, email: str, password: str) -> None:
    # Refused before the schema is copied, not after (user_create checks again inside the transaction).
    try:
        validate_password(password, user=User(email=normalize_email(email), name="Administrator", role=User.Role.ADMIN))
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from error


def _tenant_queue_and_slots_open(*, schema_name: str, concurrency: int) -> None:
    tenant_concurrency.tenant_slots_open(schema_name=schema_name, limit=concurrency)
    queues.tenant_queue_open(schema_name=schema_name)


# How long tenant_delete waits, once the tenant's host answers 404 everywhere, for requests already past the host
# lookup to finish before the schema is dropped. A straggler that runs into the dropped schema still answers
# 404 (core.apis.server_error, core.exceptions.exception_handler), never 500.
TENANT_DELETE_REQUESTS_GRACE_SECONDS = 0.5
# A deletion claim older than this is from a deletion that died half-way (its process killed): another
# deletion may take it over and finish the job.
_DELETE_CLAIM_STALE_SECONDS = 300


class TenantNotFound(NotFound):
    """No such tenant, or it is being deleted (404)."""


def _tenant_delete_claim(*, tenant: Tenant) -> Tenant:
    """Marks the tenant as being deleted, under its row lock: of two deletions at once the second waits for
    the first's mark and then finds the tenant gone (TenantNotFound). From the commit on, its host and the
    platform API answer 404 in every process (the routing caches drop it when the change is published)."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.TENANT_DELETE_DRAIN_SECONDS + _DELETE_CLAIM_STALE_SECONDS)
    with transaction.atomic():
        row = Tenant.objects.select_for_update().filter(id=tenant.id).first()
        if row is None or (row.deleting_since is not None and row.deleting_since > stale_before):
            raise TenantNotFound("No tenant with this id.")
        Tenant.objects.filter(id=row.id).update(deleting_since=now)
        routing_changed()  # an update() sends no post_save: say it ourselves (published on commit)
    row.deleting_since = now
    return row


def tenant_delete(*, tenant: Tenant) -> None:
    """Deprovisions a tenant: it stops being served, its tasks stop starting, its running ones finish, then
    schema, rows and queue go.

    First the tenant is marked as being deleted (`deleting_since`, under its row lock): its host answers 404
    from then on, and a second deletion raises TenantNotFound (404). No task of the tenant starts once this
    begins (its slots are closed) and every worker stops consuming its queue; the schema is dropped only once
    none of its tasks runs any more, or after TENANT_DELETE_DRAIN_SECONDS (a task still running then fails on
    the missing schema, and is logged). If dropping fails, the mark is undone and the tenant served again.
    """
    tenant = _tenant_delete_claim(tenant=tenant)
    schema_name = tenant.schema_name
    tenant_concurrency.tenant_slots_close(schema_name=schema_name)
    queues.tenant_queue_stop(schema_name=schema_name)
    if not tenant_concurrency.tenant_slots_wait_idle(
        schema_name=schema_name, timeout=settings.TENANT_DELETE_DRAIN_SECONDS
    ):
        logger.warning("tenant %s: tasks still running after %ss; dropping its schema anyway",
                       schema_name, settings.TENANT_DELETE_DRAIN_SECONDS)  # fmt: skip
    time.sleep(TENANT_DELETE_REQUESTS_GRACE_SECONDS)
    try:
        with transaction.atomic():
            tenant.delete(force_drop=True)  # DROP SCHEMA ... CASCADE, then the row (domains and due work cascade)
    except Exception:
        Tenant.objects.filter(id=tenant.id).update(deleting_since=None)
        routing_changed()
        _tenant_queue_and_slots_open(schema_name=schema_name, concurrency=tenant.concurrency)
        raise
    transaction.on_commit(lambda: _tenant_queue_and_slots_forget(schema_name=schema_name))
    logger.info("tenant deleted: %s", schema_name)


def _tenant_queue_and_slots_forget(*, schema_name: str) -> None:
    queues.tenant_queue_close(schema_name=schema_name)
    tenant_concurrency.tenant_slots_forget(schema_name=schema_name)
    tenant_metrics.tenant_metrics_forget(schema_name=schema_name)
    tenant_keys_delete(schema_name)  # everything else it kept in Redis: counters, caches, webhook state


def tenant_admin_reset(*, tenant: Tenant, email: str, password: str) -> tuple[User, bool]:
    """The platform admin's way back into a tenant whose admins are gone or locked out: makes `email` an
    active admin of the tenant with `password`, creating the user if the tenant has none with that email.

    An existing user is promoted, re-activated and given the new password; its API token is revoked (whoever
    held it is signed out) and its sign-in lockout lifted. The password must pass the validators
    (ValidationError, nothing written). Returns (user, created).
    """
    email = normalize_email(email)
    with schema_context(tenant.schema_name):
        with transaction.atomic():
            user = User.objects.select_for_update().filter(email=email).first()
            if user is None:
                user = user_create(email=email, password=password, role=User.Role.ADMIN, name="Administrator")
                created = True
            else:
                try:
                    validate_password(password, user=user)
                except ValidationError as error:
                    raise ValidationError({"password": error.messages}) from error
                user.role, user.is_active = User.Role.ADMIN, True
                user.is_staff = user.is_superuser = True  # tenant admins use their host's Django admin
                user.set_password(password)
                user.save(update_fields=["role", "is_active", "is_staff", "is_superuser", "password"])
                user_token_revoke(user=user)
                created = False
        user_sign_in_unlock(email=email)
    logger.info("tenant %s: admin %s by the platform's reset (user id %s)",
                tenant.schema_name, "created" if created else "restored", user.id)  # fmt: skip
    return user, created


def tenant_concurrency_set(*, tenant: Tenant, workers: int) -> Tenant:
    """Sets how many of the tenant's tasks may run at once; workers obey from the next task they start.

    Raising the limit lets parked tasks start within half a second; lowering it lets running
    tasks finish (they are never killed) while no new one starts until the count is under the new limit.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_TENANT_CONCURRENCY:
        raise ValidationError({"workers": [f"Must be an integer between 1 and {MAX_TENANT_CONCURRENCY}."]})
    Tenant.objects.filter(id=tenant.id).update(concurrency=workers)
    tenant.concurrency = workers
    schema_name = tenant.schema_name
    transaction.on_commit(
        lambda: tenant_concurrency.tenant_concurrency_limit_set(schema_name=schema_name, limit=workers)
    )
    logger.info("tenant %s: concurrency set to %s", schema_name, workers)
    return tenant


def tenant_template_sync(*, verbosity: int = 0) -> None:
    """Creates the template schema new tenants are cloned from, if missing, and migrates it."""
    from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

    template = settings.TENANT_TEMPLATE_SCHEMA
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_schema_name(template)}")
    call_command(MigrateSchemasCommand(), tenant=True, schema_name=template, interactive=False, verbosity=verbosity)
    connection.set_schema_to_public()


def tenant_event_schedule(*, tenant: Tenant, payload: dict) -> uuid.UUID:
    """Publishes an event to the tenant's queue; the tenant's consumers persist it in its event log."""
    from conversations.tasks import inbound_event_record_task

    event_id = uuid.uuid4()
    with schema_context(tenant.schema_name):
        # Sent in the tenant's context: the task carries its schema and is routed to its queue.
        inbound_event_record_task.delay(str(event_id), payload, timezone.now().isoformat())
    return event_id


PROBE_TTL_SECONDS = 3600


def tenant_probe_schedule(*, tenant: Tenant, count: int = 1, duration_ms: int = 0) -> str:
    """Sends `count` diagnostic probes to the tenant's queue (tenants.tasks.tenant_probe_task); returns the run id."""
    from tenants.tasks import tenant_probe_task

    from sociomile.celery import app

    run_id = uuid.uuid4().hex
    with schema_context(tenant.schema_name), app.producer_or_acquire() as producer:
        for index in range(count):
            tenant_probe_task.apply_async((run_id, index, duration_ms), producer=producer)
    return run_id


def tenant_probe_record(*, run_id: str, index: int, event: str, worker: str) -> None:
    """Appends a probe's start or end, stamped with Redis's clock (one clock for every machine)."""
    from django.db import connection as db_connection

    client = get_redis()
    seconds, microseconds = client.time()
    key = tenant_key(db_connection.schema_name, "probes", run_id)
    entry = {"index": index, "event": event, "at": seconds + microseconds / 1_000_000, "worker": worker}
    with client.pipeline(transaction=False) as pipe:
        pipe.rpush(key, json.dumps(entry))
        pipe.expire(key, PROBE_TTL_SECONDS)
        pipe.execute()
