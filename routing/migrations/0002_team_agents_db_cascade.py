from django.db import migrations


class Migration(migrations.Migration):
    # Separate from 0001: Django adds 0001's foreign keys at the end of that migration.
    dependencies = [("routing", "0001_teams")]

    operations = [
        # An agent is deleted by the database with its user (agents.Agent.user), not by Django's collector:
        # its team memberships must go the same way, or the user's deletion fails on this key at commit.
        migrations.RunSQL(
            sql="""
                DO $$
                DECLARE constraint_name text;
                BEGIN
                    SELECT conname INTO constraint_name FROM pg_constraint
                    WHERE conrelid = 'routing_team_agents'::regclass AND contype = 'f'
                      AND confrelid = 'agents_agent'::regclass;
                    EXECUTE format('ALTER TABLE routing_team_agents DROP CONSTRAINT %I', constraint_name);
                    ALTER TABLE routing_team_agents ADD CONSTRAINT routing_team_agents_agent_id_cascade
                        FOREIGN KEY (agent_id) REFERENCES agents_agent (user_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
                END $$;
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
