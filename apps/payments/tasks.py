from celery import shared_task

from apps.payments.services import recharge_run


@shared_task(name="payments.auto_recharge", ignore_result=True)
def payments_auto_recharge() -> int:
    return recharge_run()
