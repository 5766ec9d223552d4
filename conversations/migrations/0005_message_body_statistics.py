from django.db import migrations


class Migration(migrations.Migration):
    """Finer statistics on message bodies, so the planner sees how common a searched word is.

    With the default target (100) the histogram rarely holds a body matching `ILIKE '%word%'`, so PostgreSQL
    assumes 0.01% of messages match even when 1% do. It then fetches every match in the tenant through the
    trigram index and sorts them, to keep 51: 10,000 heap rows for one page of a 1M-message chat (~100 ms).
    With 1000 it estimates a common word within ~30% and walks the (chat, number) index from the cursor
    instead, stopping at the 51st match (~5,000 rows, a few ms, whatever the chat's size); a rare word still
    goes through the trigram index. The cost: ANALYZE samples 300,000 rows of this table instead of 30,000.
    """

    dependencies = [("conversations", "0004_inbound_event_status")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE conversations_message ALTER COLUMN body SET STATISTICS 1000",
            reverse_sql="ALTER TABLE conversations_message ALTER COLUMN body SET STATISTICS -1",
        )
    ]
