"""Budget reconciliation: the Redis spend counters against the ledger, the source of truth.

The gateway counts spend in Redis (nano-USD, rounded up per request) so admission is one
round trip; the ledger holds the exact cost of every request. A counter can drift: Redis
restarted without its data, a process died between settling and appending, an operator
edited a key. This task corrects a counter to the ledger whenever the metering pipeline is
drained (no event is waiting in the stream) and nothing settled while it looked.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Count, Sum

from apps.billing.pricing import ZERO, nanos
from apps.core.redis import sync_client
from apps.core.shards import shard_tag
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.ledger.selectors import ledger_pipeline_state
from apps.limits.blocks import budget_of
from apps.limits.limiter import budget_period_bounds, scope_keys
from apps.projects.models import Project
from apps.tenants.models import Tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BudgetDrift:
    scope: str  # "key 12" / "tenant 3" / "project 4" / "model m of key 12"
    period: str
    counter_nanos: int
    ledger_nanos: int
    corrected: bool


def _period_start(period: str, now: datetime) -> datetime | None:
    if period == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def _pipeline_drained() -> bool:
    state = ledger_pipeline_state()
    return state["length"] == 0 and not state["pending"]


def budget_reconcile(*, now: datetime | None = None) -> list[BudgetDrift]:
    """Compare each budgeted key's, project's and tenant's spend counter (and the per-model
    budgets of keys and projects) with the ledger; correct and report any difference
    larger than the per-request rounding. (End users' counters are not reconciled: they
    are many and expire when idle.)"""
    now = now or datetime.now(UTC)
    client = sync_client()
    drifts: list[BudgetDrift] = []
    # (counter name, what a drift report calls it, budget period, the ledger's rows)
    scopes = [
        (f"k:{key.id}", key.tenant_id, f"key {key.id}", key.budget_period, {"api_key": key})
        for key in ApiKey.objects.filter(budget_amount__isnull=False, revoked_at__isnull=True)
    ]
    scopes += [
        (
            f"p:{project.id}",
            project.tenant_id,
            f"project {project.id}",
            project.budget_period,
            {"project": project},
        )
        for project in Project.objects.filter(budget_amount__isnull=False)
    ]
    scopes += [
        (
            f"t:{tenant.id}",
            tenant.id,
            f"tenant {tenant.id}",
            tenant.budget_period,
            {"tenant": tenant},
        )
        for tenant in Tenant.objects.filter(budget_amount__isnull=False)
    ]
    for kind, owners, ledger_field in (
        ("km", ApiKey.objects.filter(revoked_at__isnull=True), "api_key"),
        ("pm", Project.objects.all(), "project"),
    ):
        for owner in owners.exclude(model_limits={}).only("id", "tenant_id", "model_limits"):
            for model, block in (owner.model_limits or {}).items():
                amount, period = budget_of(block)
                if amount is not None:
                    scopes.append(
                        (
                            f"{kind}:{owner.id}:{model}",
                            owner.tenant_id,
                            f"model {model} of {ledger_field.replace('_', ' ')} {owner.id}",
                            period,
                            {ledger_field: owner.id, "model": model},
                        )
                    )
    for name, tenant_id, label, budget_period, ledger_filter in scopes:
        period_id, _end = budget_period_bounds(budget_period, now)
        counter_key = scope_keys(name, period_id, shard_tag(tenant_id))[5]
        if not _pipeline_drained():
            log.info("budget reconciliation skipped: usage events still waiting")
            return drifts
        before = int(client.get(counter_key) or 0)
        records = UsageRecord.objects.filter(**ledger_filter)
        start = _period_start(budget_period, now)
        if start is not None:
            records = records.filter(created_at__gte=start)
        totals = records.aggregate(price=Sum("price"), n=Count("id"))
        ledger_nanos = nanos(totals["price"] or ZERO)
        after = int(client.get(counter_key) or 0)
        if before != after or not _pipeline_drained():
            continue  # something settled meanwhile: look again next run
        # Each request rounds up by less than one nano-USD in the counter.
        if ledger_nanos <= before <= ledger_nanos + totals["n"]:
            continue
        client.incrby(counter_key, ledger_nanos - before)
        drift = BudgetDrift(
            label,
            period_id,
            before,
            ledger_nanos,
            corrected=True,
        )
        log.warning("budget counter drift corrected: %s", drift)
        drifts.append(drift)
    return drifts
