"""An index on UPPER(schema_name): django-tenants checks a new tenant's schema name case-insensitively
(`schema_name__iexact`, TenantMixin.save), which without it reads every row of tenants_tenant; at 10,000
tenants that scan was part of each provisioning."""

from django.db import migrations, models
from django.db.models.functions import Upper


class Migration(migrations.Migration):
    dependencies = [("tenants", "0005_tenantwork_kind_webhooks")]

    operations = [
        migrations.AddIndex(
            model_name="tenant",
            index=models.Index(Upper("schema_name"), name="tenant_schema_name_upper_idx"),
        ),
    ]
