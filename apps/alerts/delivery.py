"""Sending what ``alert_send`` put in the outbox: webhook deliveries and alert emails.

A webhook delivery is attempted when due; an attempt first *claims* the delivery (one
conditional UPDATE: still pending, still due, still at the attempt count it read), so
two workers or a worker and the beat sweep never send the same attempt twice. A failed
attempt is retried after ``retry_delay`` (exponential, capped, with jitter) until
``ALERTS_WEBHOOK_RETRY_HOURS`` after the delivery was created; then it is ``failed``.
Every attempt is logged (WebhookAttempt: start, duration, status code or error).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F, Q
from django.utils import timezone

from apps.alerts import egress, events
from apps.alerts.models import AlertEvent, WebhookAttempt, WebhookDelivery
from apps.alerts.selectors import alert_recipients, webhook_secret
from apps.alerts.signing import HEADER, signature_header

log = logging.getLogger(__name__)

BASE_DELAY_S = 30
MAX_DELAY_S = 3600
# Longer than any attempt can take (the timeout plus the time to record it).
LEASE = timedelta(minutes=2)
EMAIL_MAX_ATTEMPTS = 5
EMAIL_STALE = timedelta(minutes=10)


def retry_delay(attempt: int, rng: random.Random | None = None) -> timedelta:
    """The wait after failed attempt ``attempt`` (1-based): 30 s doubling to at most an
    hour, each scaled by a random factor in [0.8, 1.2] so retries do not arrive in step."""
    base = min(BASE_DELAY_S * 2 ** (attempt - 1), MAX_DELAY_S)
    return timedelta(seconds=base * (rng or random).uniform(0.8, 1.2))


def event_body(event: AlertEvent) -> bytes:
    return orjson.dumps(
        {
            "id": event.public_id,
            "type": event.type,
            "created": int(event.created_at.timestamp()),
            "tenant": event.tenant.name,
            "data": event.data,
        }
    )


def _claim(delivery: WebhookDelivery, now: datetime) -> bool:
    return bool(
        WebhookDelivery.objects.filter(
            id=delivery.id,
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at__lte=now,
            attempts=delivery.attempts,
        ).update(attempts=F("attempts") + 1, next_attempt_at=now + LEASE)
    )


def webhook_delivery_attempt(
    *, delivery_id: int, now: datetime | None = None
) -> WebhookAttempt | None:
    """Make the due attempt of one delivery; None when it is not due (or done, or being
    attempted elsewhere). ``now`` is injectable so tests can drive retries."""
    now = now or timezone.now()
    delivery = (
        WebhookDelivery.objects.select_related("event__tenant", "endpoint")
        .filter(id=delivery_id)
        .first()
    )
    if delivery is None or not _claim(delivery, now):
        return None
    number = delivery.attempts + 1
    endpoint, event = delivery.endpoint, delivery.event
    started = time.monotonic()
    if not endpoint.enabled and event.type != events.TEST:
        outcome = egress.Outcome(None, "endpoint disabled", 0)
    else:
        body = event_body(event)
        timestamp = int(time.time())
        outcome = egress.webhook_post(
            endpoint.url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "Tollgate-Webhooks/1",
                HEADER: signature_header(webhook_secret(endpoint), timestamp, body),
                "Tollgate-Event-Id": event.public_id,
                "Tollgate-Delivery-Attempt": str(number),
            },
            allow_http=endpoint.allow_http,
            allow_internal=endpoint.allow_internal,
            timeout_s=settings.ALERTS_WEBHOOK_TIMEOUT_S,
        )
    attempt = WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        started_at=now,
        duration_ms=outcome.duration_ms or int((time.monotonic() - started) * 1000),
        status_code=outcome.status_code,
        error=outcome.error,
    )
    update: dict = {"last_status_code": outcome.status_code}
    if outcome.ok:
        update.update(status=WebhookDelivery.Status.SUCCEEDED, completed_at=now)
    else:
        next_at = now + retry_delay(number)
        window = timedelta(hours=settings.ALERTS_WEBHOOK_RETRY_HOURS)
        if next_at > delivery.created_at + window:
            update.update(status=WebhookDelivery.Status.FAILED, completed_at=now)
            log.warning("webhook delivery %s gave up after %s attempts", delivery.id, number)
        else:
            update["next_attempt_at"] = next_at
    WebhookDelivery.objects.filter(id=delivery.id, attempts=number).update(**update)
    return attempt


def deliveries_due_send(*, now: datetime | None = None, limit: int = 100) -> int:
    """Attempt every delivery that is due (the beat sweep); how many attempts were made."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
        )
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    return sum(
        webhook_delivery_attempt(delivery_id=delivery_id, now=now) is not None
        for delivery_id in due
    )


def _one_line(text: str) -> str:
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def alert_email_text(event: AlertEvent) -> tuple[str, str]:
    """(subject, plain-text body) of an alert's email."""
    data, tenant = event.data, event.tenant.name
    if event.type == events.BUDGET_THRESHOLD:
        what = (
            "tenant budget"
            if data.get("scope") == "tenant"
            else (f"budget of key {data.get('key', {}).get('name', '?')}")
        )
        subject = f"{tenant}: {data.get('threshold_percent')}% of the {what} used"
        lines = [
            f"The {what} of {tenant} reached {data.get('threshold_percent')}%:",
            f"{data.get('spent')} of {data.get('budget')} {data.get('currency', 'USD')} "
            f"spent this period ({data.get('period')}, {data.get('period_id')}).",
        ]
    elif event.type == events.BALANCE_BELOW:
        subject = f"{tenant}: prepaid balance below {data.get('threshold')}"
        lines = [
            f"The prepaid balance of {tenant} is {data.get('balance')} "
            f"{data.get('currency', 'USD')}, below {data.get('threshold')}."
        ]
    else:
        subject = f"{tenant}: {event.type}"
        lines = [f"{key}: {value}" for key, value in sorted(data.items())]
    lines += ["", f"Event {event.public_id} ({event.type})."]
    return "[Tollgate] " + _one_line(subject)[:180], "\n".join(_one_line(x) for x in lines)


def alert_email_send(*, event_id: int, now: datetime | None = None) -> bool:
    """Send one alert's email to the tenant's owners and admins, once (claimed first like
    a delivery); True if this call sent it."""
    now = now or timezone.now()
    claimable = Q(email_status=AlertEvent.Email.PENDING) | Q(
        email_status=AlertEvent.Email.SENDING, email_claimed_at__lt=now - EMAIL_STALE
    )
    claimed = AlertEvent.objects.filter(claimable, id=event_id).update(
        email_status=AlertEvent.Email.SENDING,
        email_claimed_at=now,
        email_attempts=F("email_attempts") + 1,
    )
    if not claimed:
        return False
    event = AlertEvent.objects.select_related("tenant").get(id=event_id)
    recipients = alert_recipients(tenant=event.tenant)
    subject, body = alert_email_text(event)
    try:
        if recipients:
            send_mail(subject, body, None, recipients, fail_silently=False)
    except Exception:  # noqa: BLE001 - any backend failure: retried a few times
        log.exception("alert email of event %s failed", event.public_id)
        status = (
            AlertEvent.Email.FAILED
            if event.email_attempts >= EMAIL_MAX_ATTEMPTS
            else AlertEvent.Email.PENDING
        )
        AlertEvent.objects.filter(id=event_id).update(email_status=status)
        return False
    AlertEvent.objects.filter(id=event_id).update(
        email_status=AlertEvent.Email.SENT if recipients else AlertEvent.Email.NONE
    )
    return bool(recipients)


def emails_due_send(*, now: datetime | None = None, limit: int = 100) -> int:
    now = now or timezone.now()
    due = list(
        AlertEvent.objects.filter(
            Q(email_status=AlertEvent.Email.PENDING)
            | Q(email_status=AlertEvent.Email.SENDING, email_claimed_at__lt=now - EMAIL_STALE)
        )
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    return sum(alert_email_send(event_id=event_id, now=now) for event_id in due)
