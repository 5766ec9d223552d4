# `migrate` is `migrate_schemas`, as in django-tenants, so it keeps the template schema migrated too.
from tenants.management.commands.migrate_schemas import Command  # noqa: F401
