from django.db import migrations, models


def backfill_state(apps, schema_editor):
    # Only the state: a schema without chats (a new tenant, the template bulk-created tenants are copied
    # from) needs no backfill; one with chats is counted by `manage.py reports_backfill` after the deploy,
    # batch by batch, while the summary answers 503. Its rollups (built by an earlier version of 0001, if
    # any) are emptied: the backfill counts every chat. TRUNCATE: instant, whatever their size.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM conversations_chat)")
        (has_chats,) = cursor.fetchone()
        if has_chats:
            cursor.execute("TRUNCATE reports_rollup")
        cursor.execute(
            "INSERT INTO reports_backfill (id, done, cursor, updated_at) VALUES (1, %s, 0, now())", [not has_chats]
        )


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0001_initial"),
        # Private notes: the backfill leaves them out of the figures.
        ("conversations", "0009_message_private_attachments"),
    ]

    operations = [
        migrations.CreateModel(
            name="Backfill",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("done", models.BooleanField(default=True)),
                (
                    "cursor",
                    models.BigIntegerField(default=0, help_text="The rollups hold the events of the chats with id <= this."),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "constraints": [models.CheckConstraint(condition=models.Q(("id", 1)), name="reports_backfill_single_row")],
            },
        ),
        migrations.AlterField(
            model_name="rollup",
            name="metric",
            field=models.CharField(
                choices=[
                    ("created", "Chats created (bucket of created_at)"),
                    ("resolved", "Chats resolved (bucket of resolved_at)"),
                    ("messages", "Messages (bucket of the message's created_at)"),
                    ("first_response", "Seconds from creation to the first agent message"),
                    ("wait", "Seconds from creation to the first assignment"),
                    ("resolution", "Seconds from creation to resolution"),
                    ("sla_breached", "SLA breaches (bucket of the breach)"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(backfill_state, migrations.RunPython.noop),
    ]
