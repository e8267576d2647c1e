"""Prepaid balances in Redis: the counter admission reserves against, kept equal to the
balance journal (apps/wallet), the source of truth.

The rule: the Redis balance (nano-USD) is nanos(credits) less the debits settled in
Redis, each request's price rounded up to a nano. It moves three ways:

- ``Limiter.settle`` debits a request's real price and releases its reservation, in the
  settlement round trip (apps/limits/lua.py).
- ``balance_credit`` (a ``balance_entry_hook``) adds a committed journal entry. It moves a
  loaded balance only: a missing balance is never created holding one credit.
- A missing balance (new prepaid tenant, Redis lost its data) is refused by admission as
  ``nobalance``; the gateway then loads it from the journal once (``balance_journal_nanos``,
  a database read off the warm path) with SET NX and asks again. Every later request of
  the tenant finds it loaded.

What can make it drift (a crash between a journal insert and its credit, a settlement that
never reached Redis and was spooled, debits in flight when the balance was loaded) is
repaired by ``balance_reconcile`` (Celery beat, ``limits.reconcile_balances``) when the
metering pipeline is drained.
"""

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Sum

from apps.audit.services import audit_record
from apps.billing.pricing import ZERO, nanos
from apps.core.redis import sync_client
from apps.ledger.models import UsageRecord
from apps.ledger.selectors import ledger_pipeline_state
from apps.limits.limiter import balance_keys
from apps.limits.lua import CREDIT
from apps.tenants.models import BillingMode, Tenant
from apps.wallet.models import BalanceEntry

log = logging.getLogger(__name__)


def balance_journal_nanos(*, tenant_id: int) -> int:
    """The journal's balance in nano-USD: credits (exact) less the prepaid usage, rounded
    in the tenant's favour as the counter's own slack allows."""
    credits = BalanceEntry.objects.filter(tenant_id=tenant_id).aggregate(total=Sum("amount"))
    usage = UsageRecord.objects.filter(tenant_id=tenant_id, prepaid=True).aggregate(
        total=Sum("price")
    )
    return nanos(credits["total"] or ZERO) - nanos(usage["total"] or ZERO)


def balance_credit(tenant_id: int, amount: Decimal) -> None:
    """The Redis side of a committed journal entry (registered as a balance_entry_hook).
    A failure is logged, not raised: the entry is committed and reconciliation adds it."""
    try:
        sync_client().eval(CREDIT, 1, balance_keys(tenant_id)[0], nanos(amount))
    except Exception:  # noqa: BLE001 - Redis away: the journal stands, reconciliation repairs
        log.exception("crediting tenant %s's balance in Redis failed", tenant_id)


@dataclass(frozen=True)
class BalanceDrift:
    tenant_id: int
    counter_nanos: int | None  # None: not loaded
    journal_nanos: int
    corrected: bool


def _pipeline_drained() -> bool:
    state = ledger_pipeline_state()
    return state["length"] == 0 and not state["pending"]


def balance_reconcile() -> list[BalanceDrift]:
    """Compare each prepaid tenant's Redis balance with the journal; correct and report a
    difference larger than the per-request rounding (each settled request rounds its
    debit up by less than a nano-USD). A balance not loaded is left to admission."""
    client = sync_client()
    drifts: list[BalanceDrift] = []
    for tenant in Tenant.objects.filter(billing_mode=BillingMode.PREPAID).order_by("id"):
        if not _pipeline_drained():
            log.info("balance reconciliation skipped: usage events still waiting")
            return drifts
        key = balance_keys(tenant.id)[0]
        before = client.get(key)
        if before is None:
            continue
        credits = BalanceEntry.objects.filter(tenant=tenant).aggregate(total=Sum("amount"))
        usage = UsageRecord.objects.filter(tenant=tenant, prepaid=True).aggregate(
            total=Sum("price"), n=Count("id")
        )
        journal = nanos(credits["total"] or ZERO) - nanos(usage["total"] or ZERO)
        after = client.get(key)
        if before != after or not _pipeline_drained():
            continue  # something settled meanwhile: look again next run
        counter = int(before)
        if journal - usage["n"] <= counter <= journal:
            continue
        client.incrby(key, journal - counter)
        drift = BalanceDrift(tenant.id, counter, journal, corrected=True)
        log.warning("balance drift corrected: %s", drift)
        audit_record(
            tenant=tenant,
            actor=None,
            action="balance.drift_corrected",
            target=tenant,
            details={"redis_nanos": counter, "journal_nanos": journal},
        )
        drifts.append(drift)
    return drifts
