"""Prepaid balances: a tenant in ``prepaid`` billing mode has a balance that only the
balance journal changes.

The journal is two tables read as one:

    BalanceEntry (models.py)   credits and corrections: grants (staff, with a reason),
                               top-ups (payments), refunds, adjustments; idempotent on
                               (tenant, kind, ref)
    UsageRecord.prepaid        usage debits: the ledger's own rows of a prepaid tenant,
                               each debiting its price, idempotent per request id as the
                               ledger is (no second copy of 30M rows a month)

    balance = Σ BalanceEntry.amount − Σ price of the tenant's prepaid ledger rows

Modules: models.py, services.py (writes: ``balance_entry_add``), selectors.py (reads:
``balance_get``, the journal). Imports go from here to tenants and ledger, never back.
"""
