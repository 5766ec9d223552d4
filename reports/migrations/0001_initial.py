import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """The rollups' table. (It once also built the rollups of the chats already there, which took a minute
    per million chats inside the deploy; reports.0002 leaves that to the backfill.)"""

    initial = True

    dependencies = [
        ("conversations", "0008_chat_first_assigned_first_response"),
        # The backfill (reports.0002) reads agents_assignment (made by 0001).
        ("agents", "0001_agents_allocation"),
    ]

    operations = [
        migrations.CreateModel(
            name="Rollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("bucket", models.DateTimeField(help_text="Start of the 15-minute UTC bucket.")),
                ("agent_id", models.BigIntegerField(default=0)),
                (
                    "metric",
                    models.CharField(
                        choices=[
                            ("created", "Chats created (bucket of created_at)"),
                            ("resolved", "Chats resolved (bucket of resolved_at)"),
                            ("messages", "Messages (bucket of the message's created_at)"),
                            ("first_response", "Seconds from creation to the first agent message"),
                            ("wait", "Seconds from creation to the first assignment"),
                            ("resolution", "Seconds from creation to resolution"),
                        ],
                        max_length=16,
                    ),
                ),
                ("seconds", models.IntegerField(default=0, help_text="The duration, for duration metrics; 0 for counts.")),
                ("count", models.BigIntegerField(default=0)),
                (
                    "application",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="conversations.application",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("bucket", "application", "agent_id", "metric", "seconds"),
                        include=("count",),
                        name="rollup_key",
                    )
                ],
            },
        ),
    ]
