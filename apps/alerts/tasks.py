from celery import shared_task

from apps.alerts.delivery import (
    alert_email_send,
    deliveries_due_send,
    emails_due_send,
    webhook_delivery_attempt,
)
from apps.alerts.evaluation import alerts_evaluate


@shared_task(name="alerts.evaluate", ignore_result=True)
def alerts_evaluate_task() -> int:
    return alerts_evaluate()


@shared_task(name="alerts.deliver_due", ignore_result=True)
def alerts_deliver_due() -> int:
    """The sweep: due webhook attempts (first ones and retries) and pending emails."""
    return deliveries_due_send() + emails_due_send()


@shared_task(name="alerts.deliver", ignore_result=True)
def alerts_deliver(delivery_id: int) -> bool:
    return webhook_delivery_attempt(delivery_id=delivery_id) is not None


@shared_task(name="alerts.email", ignore_result=True)
def alerts_email(event_id: int) -> bool:
    return alert_email_send(event_id=event_id)
