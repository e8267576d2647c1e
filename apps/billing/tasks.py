from celery import shared_task

from apps.billing.services import reconcile_run, rollup_sync, statements_sync


@shared_task(name="billing.rollups", ignore_result=True)
def billing_rollups() -> dict:
    return rollup_sync().as_dict()


@shared_task(name="billing.statements", ignore_result=True)
def billing_statements() -> dict:
    return statements_sync()


@shared_task(name="billing.reconcile", ignore_result=True)
def billing_reconcile() -> bool:
    return reconcile_run().ok
