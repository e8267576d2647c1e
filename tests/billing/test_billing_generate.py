"""The synthetic data generator writes valid, priced ledger rows that bill like real ones."""

from datetime import UTC, datetime

from django.core.management import call_command

from apps.billing.services import reconcile_run, rollup_sync
from apps.ledger.models import UsageRecord


def test_generate_usage_makes_priced_records_that_reconcile(db):
    call_command(
        "generate_usage", days=2, per_day=500, tenants=2, end="2026-05-03", keep_indexes=True
    )
    assert UsageRecord.objects.count() == 1000
    assert not UsageRecord.objects.filter(price__isnull=True).exists()
    assert (
        UsageRecord.objects.filter(created_at__gte=datetime(2026, 5, 2, tzinfo=UTC)).count() == 500
    )
    rollup_sync()
    assert reconcile_run(
        window_start=datetime(2026, 5, 1, tzinfo=UTC), window_end=datetime(2026, 5, 3, tzinfo=UTC)
    ).ok
