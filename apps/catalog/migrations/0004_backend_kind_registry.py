# The kinds come from the gateway's registry of backend adapters (state only: no SQL).

from django.db import migrations, models

import apps.gateway.backends.base


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0003_backend_reports_stop_sequence"),
    ]

    operations = [
        migrations.AlterField(
            model_name="backend",
            name="kind",
            field=models.CharField(
                choices=apps.gateway.backends.base.backend_kind_choices,
                default="openai",
                max_length=16,
            ),
        ),
    ]
