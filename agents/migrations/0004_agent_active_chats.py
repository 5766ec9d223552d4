from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0003_agents_for_existing_staff"),
        ("conversations", "0006_chat_assignment_partial_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="active_chats",
            field=models.PositiveIntegerField(default=0, db_default=0, editable=False),
        ),
        # Existing agents start from the real count.
        migrations.RunSQL(
            """
            UPDATE agents_agent AS agent SET active_chats = counted.total
            FROM (
                SELECT assigned_agent_id, count(*) AS total FROM conversations_chat
                WHERE status = 'assigned' AND assigned_agent_id IS NOT NULL GROUP BY assigned_agent_id
            ) AS counted
            WHERE agent.user_id = counted.assigned_agent_id
            """,
            migrations.RunSQL.noop,
        ),
    ]
