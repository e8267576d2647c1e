"""Cost and price are two numbers: the existing ``cost`` stays the operator's cost, the
new ``price`` is what the tenant pays. Records from before rate cards existed were billed
at cost, so their price is their cost. The price-version FK is renamed ``cost_rule``."""

import django.db.models.deletion
from django.db import migrations, models


def price_is_cost(apps, schema_editor):
    UsageRecord = apps.get_model("ledger", "UsageRecord")
    UsageRecord.objects.update(price=models.F("cost"))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_price_rules"),
        ("catalog", "0006_price_rules"),
        ("ledger", "0005_usagerecord_byok"),
    ]

    operations = [
        migrations.RenameField(model_name="usagerecord", old_name="price", new_name="cost_rule"),
        migrations.AddField(
            model_name="usagerecord",
            name="price",
            field=models.DecimalField(decimal_places=12, default=0, max_digits=24),
        ),
        migrations.RunPython(price_is_cost, migrations.RunPython.noop, elidable=True),
        migrations.AddField(
            model_name="usagerecord",
            name="rate_card",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="billing.ratecard",
            ),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="price_rule",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="billing.ratecardprice",
            ),
        ),
    ]
