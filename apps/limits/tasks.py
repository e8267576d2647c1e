from celery import shared_task

from apps.limits.balances import balance_reconcile
from apps.limits.services import budget_reconcile


@shared_task(name="limits.reconcile_budgets", ignore_result=True)
def limits_reconcile_budgets() -> int:
    return len(budget_reconcile())


@shared_task(name="limits.reconcile_balances", ignore_result=True)
def limits_reconcile_balances() -> int:
    return len(balance_reconcile())
