from django.db import migrations


class Migration(migrations.Migration):
    """btree_gin lets a GIN index hold a plain integer column beside trigrams: message search keeps (chat, bucket
    of numbers) and body trigrams in one index (conversations.0007). In public, for the reasons of 0002."""

    dependencies = [("core", "0002_pg_trgm")]

    operations = [
        migrations.RunSQL(
            "CREATE EXTENSION IF NOT EXISTS btree_gin WITH SCHEMA public",
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
