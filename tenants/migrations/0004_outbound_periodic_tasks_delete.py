"""The outbound scheduler no longer has a celery-beat entry per tenant, nor the sweeps one per kind that
fanned out to every tenant (the due-work index drives both, tenants.work): delete those PeriodicTasks, and seed one `outbound` and one `assignment`
row per existing tenant so that work made before this deploy (pending messages, waiting chats, reply
deadlines) is found. Each seeded row is worked once by the dispatcher, which settles it: deleted when the
tenant has nothing of that kind. A one-time cost at the deploy, spread by the dispatcher's batch size."""

from django.db import migrations


def forwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__startswith="outbound-send:").delete()
    # The old sweeps that fanned a task out to every tenant (beat copied them from CELERY_BEAT_SCHEDULE into
    # its table, where they would outlive the setting and name a task that no longer exists).
    PeriodicTask.objects.filter(task="tenants.tasks.tenants_fanout_task").delete()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO tenants_tenantwork (tenant_id, kind, due_at, version)
            SELECT tenant.id, kind, now(), 1 FROM tenants_tenant AS tenant
            CROSS JOIN (VALUES ('outbound'), ('assignment')) AS kinds(kind)
            ON CONFLICT (tenant_id, kind) DO NOTHING
            """
        )


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0003_tenantwork"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
