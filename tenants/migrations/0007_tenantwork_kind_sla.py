# TenantWork.Kind.SLA: SLA breaches found by due time (routing, issue 24).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0006_tenant_schema_name_upper_idx'),
    ]

    operations = [
        migrations.AlterField(
            model_name='tenantwork',
            name='kind',
            field=models.CharField(choices=[('assignment', 'Assignment'), ('outbound', 'Outbound send'), ('counts', 'Counts reconcile'), ('webhooks', 'Webhook deliveries'), ('sla', 'SLA breaches')], max_length=20),
        ),
    ]
