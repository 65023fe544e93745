
import django.db.models.deletion
import fleet.core.fields
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('clusters', '0002_values'),
        ('sources', '0004_rename_last_evaluated_sha'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='EmittedMark',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=200, unique=True)),
                ('created', models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.CreateModel(
            name='Subscription',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('updated', models.DateTimeField(auto_now=True)),
                ('name', models.CharField(max_length=100)),
                ('events', models.JSONField(default=list, help_text='Event types: commit_blocked, approval_needed, rollout_failed, rollout_halted, drift_detected, sync_window_opened, waiver_expiring')),
                ('channel', models.CharField(choices=[('webhook', 'Webhook (JSON, signed with HMAC-SHA256)'), ('slack', 'Slack incoming webhook'), ('teams', 'Microsoft Teams incoming webhook'), ('email', 'Email')], max_length=16)),
                ('target', fleet.core.fields.EncryptedTextField(blank=True, default='', help_text='Webhook URL or comma-separated email addresses (encrypted).')),
                ('target_hint', models.CharField(blank=True, editable=False, max_length=200)),
                ('secret', fleet.core.fields.EncryptedTextField(blank=True, default='', help_text='HMAC-SHA256 key of a generic webhook (encrypted, shown once).')),
                ('enabled', models.BooleanField(default=True)),
                ('cluster_group', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='clusters.clustergroup')),
                ('mapping', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='sources.pathmapping')),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('repository', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='sources.repository')),
            ],
            options={
                'ordering': ['name', 'id'],
            },
        ),
        migrations.CreateModel(
            name='Delivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('audit_event_id', models.BigIntegerField(help_text='The audit event the notification is about.')),
                ('audit_sequence', models.BigIntegerField()),
                ('event_type', models.CharField(choices=[('commit_blocked', 'Commit blocked by policy'), ('approval_needed', 'Approval needed'), ('rollout_failed', 'Rollout failed'), ('rollout_halted', 'Rollout halted'), ('drift_detected', 'Drift detected'), ('sync_window_opened', 'Sync window opened'), ('waiver_expiring', 'Waiver expiring')], max_length=32)),
                ('channel', models.CharField(choices=[('webhook', 'Webhook (JSON, signed with HMAC-SHA256)'), ('slack', 'Slack incoming webhook'), ('teams', 'Microsoft Teams incoming webhook'), ('email', 'Email')], max_length=16)),
                ('title', models.CharField(max_length=300)),
                ('payload', models.JSONField(help_text="What was sent, without secrets, as the owner's role may see it.")),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('retrying', 'Retrying'), ('delivered', 'Delivered'), ('failed', 'Failed')], default='pending', max_length=16)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('response_code', models.IntegerField(blank=True, null=True)),
                ('error', models.TextField(blank=True)),
                ('lease_until', models.DateTimeField(blank=True, null=True)),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('delivered_at', models.DateTimeField(blank=True, null=True)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('updated', models.DateTimeField(auto_now=True)),
                ('subscription', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='notifications.subscription')),
            ],
            options={
                'verbose_name_plural': 'deliveries',
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='WindowState',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('open', models.BooleanField()),
                ('checked_at', models.DateTimeField()),
                ('cluster_group', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='clusters.clustergroup')),
            ],
        ),
        migrations.AddConstraint(
            model_name='subscription',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('cluster_group__isnull', False), ('mapping__isnull', True), ('repository__isnull', True)), models.Q(('cluster_group__isnull', True), ('mapping__isnull', False), ('repository__isnull', True)), models.Q(('cluster_group__isnull', True), ('mapping__isnull', True), ('repository__isnull', False)), _connector='OR'), name='notifications_subscription_one_subject'),
        ),
        migrations.AddIndex(
            model_name='delivery',
            index=models.Index(fields=['status', 'next_attempt_at'], name='notificatio_status_00072e_idx'),
        ),
        migrations.AddConstraint(
            model_name='delivery',
            constraint=models.UniqueConstraint(fields=('subscription', 'audit_event_id'), name='notifications_once_per_event'),
        ),
    ]
