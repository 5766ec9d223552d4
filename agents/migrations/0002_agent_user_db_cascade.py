from django.db import migrations


class Migration(migrations.Migration):
    # Separate from 0001: Django adds 0001's foreign keys at the end of that migration.
    dependencies = [("agents", "0001_agents_allocation")]

    operations = [
        # The agent goes with its user, done by the database (see Agent.user).
        migrations.RunSQL(
            sql="""
                DO $$
                DECLARE constraint_name text;
                BEGIN
                    SELECT conname INTO constraint_name FROM pg_constraint
                    WHERE conrelid = 'agents_agent'::regclass AND contype = 'f';
                    EXECUTE format('ALTER TABLE agents_agent DROP CONSTRAINT %I', constraint_name);
                    ALTER TABLE agents_agent ADD CONSTRAINT agents_agent_user_id_cascade
                        FOREIGN KEY (user_id) REFERENCES core_user (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
                END $$;
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
