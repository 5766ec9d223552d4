from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0005_message_body_statistics"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chat",
            index=models.Index(
                condition=models.Q(("status", "waiting")),
                fields=["created_at", "application", "number"],
                name="chat_waiting_queue_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="chat",
            index=models.Index(
                condition=models.Q(("assigned_agent__isnull", True), ("status", "assigned")),
                fields=["id"],
                name="chat_assigned_orphan_idx",
            ),
        ),
    ]
