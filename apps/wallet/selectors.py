"""Reads of the balance journal, through ``for_tenant`` like every tenant-scoped read."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from apps.ledger.models import UsageRecord
from apps.tenants.models import Tenant
from apps.wallet.models import BalanceEntry

ZERO = Decimal(0)


def balance_credits(*, tenant: Tenant, before: datetime | None = None) -> Decimal:
    entries = BalanceEntry.objects.for_tenant(tenant)
    if before is not None:
        entries = entries.filter(created_at__lt=before)
    return entries.aggregate(total=Sum("amount"))["total"] or ZERO


def balance_usage(*, tenant: Tenant, before: datetime | None = None) -> Decimal:
    """The prepaid usage debited so far: the price of the tenant's prepaid ledger rows."""
    records = UsageRecord.objects.for_tenant(tenant).filter(prepaid=True)
    if before is not None:
        records = records.filter(created_at__lt=before)
    return records.aggregate(total=Sum("price"))["total"] or ZERO


def balance_get(*, tenant: Tenant, before: datetime | None = None) -> Decimal:
    """The balance: the journal's sum (credits less prepaid usage), exact."""
    return balance_credits(tenant=tenant, before=before) - balance_usage(
        tenant=tenant, before=before
    )


def balance_entries(*, tenant: Tenant):
    return BalanceEntry.objects.for_tenant(tenant).order_by("-created_at", "-id")


def balance_usage_by_day(*, tenant: Tenant, since: datetime) -> list[dict]:
    """The prepaid usage debits per UTC day since ``since``, newest first:
    ``{"day", "requests", "amount"}``."""
    return list(
        UsageRecord.objects.for_tenant(tenant)
        .filter(prepaid=True, created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(requests=Count("id"), amount=Sum("price"))
        .order_by("-day")
    )
