import django.db.models.deletion
from django.db import migrations, models


# Existing rollup rows count in their key's project (the one projects' migration moved
# every key into); the next rebuild of a bucket writes the same.
FILL_PROJECT = """
UPDATE billing_usagerollup AS r SET project_id = k.project_id
FROM keys_apikey AS k WHERE k.id = r.api_key_id AND r.project_id IS NULL
"""


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_statement_prepaid_balance"),
        ("keys", "0007_apikey_project_required"),
        ("projects", "0001_initial"),
        ("tenants", "0007_tenant_billing_mode"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="usagerollup",
            name="rollup_bucket_unique",
        ),
        migrations.AddField(
            model_name="usagerollup",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="projects.project",
            ),
        ),
        migrations.RunSQL(FILL_PROJECT, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="usagerollup",
            constraint=models.UniqueConstraint(
                fields=("granularity", "bucket_start", "tenant", "project", "api_key", "model"),
                name="rollup_bucket_unique",
                nulls_distinct=False,
            ),
        ),
    ]
