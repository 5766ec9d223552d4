from django.db import migrations


class Migration(migrations.Migration):
    """pg_trgm backs the partial-match message search. Extensions are per database, and their functions
    must live in the public schema so every tenant's search_path ("<tenant>, public") sees them; created
    from a tenant schema they would be visible to that tenant only."""

    dependencies = [("core", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
