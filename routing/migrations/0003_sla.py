# SLA policies, chats' SLA due times and breaches, away messages sent (routing, issue 24).

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0002_chat_system'),
        ('routing', '0002_team_agents_db_cascade'),
    ]

    operations = [
        migrations.CreateModel(
            name='ChatAway',
            fields=[
                ('chat', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='conversations.chat')),
                ('sent_at', models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name='SlaPolicy',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('name', models.CharField(max_length=255)),
                ('first_response_seconds', models.PositiveIntegerField()),
                ('resolution_seconds', models.PositiveIntegerField()),
            ],
            options={
                'verbose_name': 'SLA policy',
                'verbose_name_plural': 'SLA policies',
                'ordering': ['id'],
            },
        ),
        migrations.CreateModel(
            name='ApplicationSla',
            fields=[
                ('application', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='sla_policy_link', serialize=False, to='conversations.application')),
                ('policy', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='application_links', to='routing.slapolicy')),
            ],
        ),
        migrations.CreateModel(
            name='ChatSla',
            fields=[
                ('chat', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='sla', serialize=False, to='conversations.chat')),
                ('first_response_due_at', models.DateTimeField(blank=True, help_text="None: the team's hours never open.", null=True)),
                ('resolution_due_at', models.DateTimeField(blank=True, null=True)),
                ('first_response_at', models.DateTimeField(blank=True, null=True)),
                ('breached', models.BooleanField(default=False)),
                ('breached_at', models.DateTimeField(blank=True, null=True)),
                ('policy', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='routing.slapolicy')),
            ],
            options={
                'indexes': [models.Index(condition=models.Q(('breached', False)), fields=['first_response_due_at'], name='chatsla_first_due_idx'), models.Index(condition=models.Q(('breached', False)), fields=['resolution_due_at'], name='chatsla_resolution_due_idx')],
            },
        ),
    ]
