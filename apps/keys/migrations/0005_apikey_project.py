import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0004_apikey_previous_secret"),
        ("projects", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="default_tags",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="apikey",
            name="model_limits",
            field=models.JSONField(blank=True, default=dict),
        ),
        # Nullable until 0006 has put every key into its tenant's default project.
        migrations.AddField(
            model_name="apikey",
            name="project",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.RESTRICT,
                related_name="api_keys",
                to="projects.project",
            ),
        ),
    ]
