"""django-tenants: which apps live in the public schema and which in every tenant's, how tenants are made."""

from sociomile.settings.env import env_int

# Public schema: tenants, domains, platform users, celery-beat. Each tenant schema: its own users, tokens,
# admin log and the product's data. Apps in both lists get their tables in every schema, and a tenant's
# search_path ("<tenant>, public") finds the tenant's own table first: tokens and users never cross.
SHARED_APPS = [
    # Before django_tenants: its `migrate` / `migrate_schemas` commands are overridden by ours.
    "tenants",
    "django_tenants",
    "core",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.admin",
    "rest_framework.authtoken",
    "core",
    "conversations",
    "agents",
    "scheduler",
    "events",
    "reports",
    "stream",  # no models: the stream reads the events outbox
    "routing",
    "workspace",
    "contacts",
    "audit",
    "integrations.qiscus",  # no models of its own (its fields are agents'), so nothing to migrate
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

# SET search_path only when the schema changes, instead of before every query (half of all round trips).
# Safe: django-tenants forgets the path on close, rollback and savepoint rollback, which undo a SET
# (core/tests/test_db.py).
TENANT_LIMIT_SET_CALLS = True
TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_URLCONF = "sociomile.urls_public"
ROOT_URLCONF = "sociomile.urls_tenants"
# New tenant schemas are cloned from this one, kept migrated by `migrate_schemas` (tenants.services).
# Not a valid slug (underscore), so no tenant can ever be called this.
TENANT_TEMPLATE_SCHEMA = "tenant_template"
# `migrate_schemas --executor=multiprocessing` migrates this many tenant schemas at once (each in a process
# with its own connection); only schemas that lack a migration are migrated at all (tenants.schema_migrations).
TENANT_MULTIPROCESSING_MAX_PROCESSES = env_int("MIGRATE_PROCESSES", 2)
# Slugs that would shadow the platform host's own names or PostgreSQL's schemas.
TENANT_RESERVED_SLUGS = {"public", "www", "api", "admin", "docs", "static", "health", "metrics", "template"}
