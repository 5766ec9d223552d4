from django.conf import settings
from django.db import migrations


def agents_for_existing_staff(apps, schema_editor):
    """Tenants created before the agents app: each admin and agent gets its (offline) Agent row."""
    User = apps.get_model("core", "User")
    Agent = apps.get_model("agents", "Agent")
    Agent.objects.bulk_create(
        [
            Agent(user_id=user_id, is_online=False, max_customers=settings.AGENT_DEFAULT_MAX_CUSTOMERS)
            for user_id in User.objects.filter(role__in=["admin", "agent"], agent__isnull=True).values_list("id", flat=True)
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [("agents", "0002_agent_user_db_cascade")]

    operations = [migrations.RunPython(agents_for_existing_staff, migrations.RunPython.noop)]
