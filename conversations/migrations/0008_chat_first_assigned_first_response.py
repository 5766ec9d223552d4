from django.db import migrations, models


class Migration(migrations.Migration):
    """What the reports measure waiting and first response to (reports/services.py keeps them; reports'
    migration 0001 fills them for existing chats)."""

    dependencies = [("conversations", "0007_message_search_index")]

    operations = [
        migrations.AddField(
            model_name="chat", name="first_assigned_at", field=models.DateTimeField(blank=True, editable=False, null=True)
        ),
        migrations.AddField(
            model_name="chat", name="first_response_at", field=models.DateTimeField(blank=True, editable=False, null=True)
        ),
    ]
