# Teams, application and chat routing (issue 24).

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('agents', '0001_agents_allocation'),
        ('conversations', '0002_chat_system'),
    ]

    operations = [
        migrations.CreateModel(
            name='Team',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('name', models.CharField(max_length=255)),
                ('business_hours', models.JSONField(blank=True, null=True)),
                ('away_message', models.TextField(blank=True, default='')),
                ('agents', models.ManyToManyField(blank=True, related_name='teams', to='agents.agent')),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.CreateModel(
            name='ChatTeam',
            fields=[
                ('chat', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='route', serialize=False, to='conversations.chat')),
                ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='transferred_chats', to='routing.team')),
            ],
        ),
        migrations.CreateModel(
            name='ApplicationTeam',
            fields=[
                ('application', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='route', serialize=False, to='conversations.application')),
                ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='applications', to='routing.team')),
            ],
        ),
    ]
