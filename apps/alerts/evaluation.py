"""Threshold evaluation (the beat task ``alerts.evaluate``): budgets of tenants and keys
(spend in the period = Σ ledger price, as the limits count it) and prepaid balances.

Only tenants that can alert are read: those with a budget, a budgeted key, or a prepaid
balance with thresholds. A crossed threshold inserts its AlertFired row — unique per
(tenant, scope, threshold, period_id) — and raises the alert in the same transaction, so
concurrent or repeated evaluations (several workers, a restart) raise it once. A new
budget period has a new period_id (re-armed). A balance threshold re-arms when the
balance is back at or above it; its next fall is a new episode.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from apps.alerts import events
from apps.alerts.models import AlertEvent, AlertFired
from apps.alerts.selectors import alert_settings_get, balance_thresholds
from apps.alerts.services import alert_send
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.limits.limiter import budget_period_bounds
from apps.tenants.models import BillingMode, Tenant
from apps.wallet.selectors import balance_get

log = logging.getLogger(__name__)
BALANCE = "balance"


def _period_start(period: str, now: datetime) -> datetime | None:
    if period == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def _fire(
    *, tenant: Tenant, scope: str, threshold: str, period_id: str, event_type: str, data: dict
) -> bool:
    try:
        with transaction.atomic():
            fired = AlertFired.objects.create(
                tenant=tenant, scope=scope, threshold=threshold, period_id=period_id
            )
            alert_send(
                tenant=tenant,
                event_type=event_type,
                data=data,
                dedupe_key=f"{scope}:{threshold}:{period_id}",
            )
            fired.event = AlertEvent.objects.filter(
                tenant=tenant, dedupe_key=f"{scope}:{threshold}:{period_id}"
            ).first()
            fired.save(update_fields=["event"])
    except IntegrityError:
        return False  # fired before (or by a concurrent evaluation)
    log.info("alert fired: tenant %s %s %s %s", tenant.id, scope, threshold, period_id)
    return True


def _budget_alerts(
    *,
    tenant: Tenant,
    scope: str,
    budget: Decimal,
    spent: Decimal,
    period: str,
    period_id: str,
    percents: list[int],
    key: ApiKey | None,
) -> int:
    if budget <= 0:
        return 0
    fired = 0
    for percent in percents:
        if spent * 100 < budget * percent:
            continue
        data = {
            "scope": "key" if key is not None else "tenant",
            "threshold_percent": percent,
            "budget": format(budget, "f"),
            "spent": format(spent.normalize(), "f"),
            "currency": "USD",
            "period": period,
            "period_id": period_id,
        }
        if key is not None:
            data["key"] = {"id": key.id, "name": key.name, "prefix": key.prefix}
        fired += _fire(
            tenant=tenant,
            scope=scope,
            threshold=str(percent),
            period_id=period_id,
            event_type=events.BUDGET_THRESHOLD,
            data=data,
        )
    return fired


def _key_spend(tenant: Tenant, keys: list[ApiKey], now: datetime) -> dict[int, Decimal]:
    """Each key's spend in its own current period, one query per period kind."""
    spend: dict[int, Decimal] = {}
    by_period: dict[str, list[int]] = defaultdict(list)
    for key in keys:
        by_period[key.budget_period].append(key.id)
    for period, ids in by_period.items():
        records = UsageRecord.objects.for_tenant(tenant).filter(api_key_id__in=ids)
        start = _period_start(period, now)
        if start is not None:
            records = records.filter(created_at__gte=start)
        for key_id, total in (
            records.order_by()
            .values("api_key_id")
            .annotate(t=Sum("price"))
            .values_list("api_key_id", "t")
        ):
            spend[key_id] = total or Decimal(0)
    return spend


def _balance_alerts(tenant: Tenant, thresholds: list[Decimal], now: datetime) -> int:
    balance = balance_get(tenant=tenant)
    fired = 0
    for threshold in thresholds:
        label = format(threshold, "f")
        rows = AlertFired.objects.for_tenant(tenant).filter(scope=BALANCE, threshold=label)
        open_row = rows.filter(rearmed_at__isnull=True).first()
        if balance >= threshold:
            if open_row is not None:
                rows.filter(id=open_row.id).update(rearmed_at=now)
            continue
        if open_row is not None:
            continue  # fired in this episode already
        episode = f"e{rows.count()}"
        fired += _fire(
            tenant=tenant,
            scope=BALANCE,
            threshold=label,
            period_id=episode,
            event_type=events.BALANCE_BELOW,
            data={
                "threshold": label,
                "balance": format(balance.normalize(), "f"),
                "currency": "USD",
            },
        )
    return fired


def tenant_alerts_evaluate(*, tenant: Tenant, now: datetime | None = None) -> int:
    """Evaluate one tenant's thresholds; how many alerts this call raised."""
    now = now or timezone.now()
    settings = alert_settings_get(tenant=tenant)
    percents = list(settings.budget_percents)
    fired = 0
    records = UsageRecord.objects.for_tenant(tenant)
    if tenant.budget_amount is not None and percents:
        start = _period_start(tenant.budget_period, now)
        scoped = records if start is None else records.filter(created_at__gte=start)
        spent = scoped.aggregate(t=Sum("price"))["t"] or Decimal(0)
        fired += _budget_alerts(
            tenant=tenant,
            scope="tenant",
            budget=tenant.budget_amount,
            spent=spent,
            period=tenant.budget_period,
            period_id=budget_period_bounds(tenant.budget_period, now)[0],
            percents=percents,
            key=None,
        )
    keys = list(
        ApiKey.objects.filter(tenant=tenant, revoked_at__isnull=True, budget_amount__isnull=False)
    )
    if keys and percents:
        spend = _key_spend(tenant, keys, now)
        for key in keys:
            fired += _budget_alerts(
                tenant=tenant,
                scope=f"key:{key.id}",
                budget=key.budget_amount,
                spent=spend.get(key.id, Decimal(0)),
                period=key.budget_period,
                period_id=budget_period_bounds(key.budget_period, now)[0],
                percents=percents,
                key=key,
            )
    thresholds = balance_thresholds(settings)
    if tenant.prepaid and thresholds:
        fired += _balance_alerts(tenant, thresholds, now)
    return fired


def alerts_evaluate(*, now: datetime | None = None) -> int:
    """Evaluate every tenant that can alert; how many alerts were raised."""
    now = now or datetime.now(UTC)
    budgeted_keys = ApiKey.objects.filter(
        revoked_at__isnull=True, budget_amount__isnull=False
    ).values("tenant_id")
    tenants = Tenant.objects.filter(
        Q(budget_amount__isnull=False)
        | Q(id__in=budgeted_keys)
        | Q(billing_mode=BillingMode.PREPAID, alert_settings__isnull=False)
    ).distinct()
    return sum(tenant_alerts_evaluate(tenant=t, now=now) for t in tenants)
