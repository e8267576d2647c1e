"""The Stripe webhook. Stripe's signature (STRIPE_WEBHOOK_SECRET) is its only
authentication, so it is CSRF-exempt; a forged, stale or replayed delivery is a 400 and
changes nothing. Handling is the service's (services/events.py)."""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.payments.selectors import payments_enabled
from apps.payments.services import PaymentsError, stripe_event_receive
from apps.payments.stripe_api import BadSignature

log = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    if not payments_enabled():
        return JsonResponse({"error": "Stripe is not configured on this platform."}, status=404)
    try:
        outcome = stripe_event_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except BadSignature as exc:
        # Only our own words reach the log: nothing of the (unauthenticated) body or header.
        log.warning("Stripe webhook refused from %s: %s", request.META.get("REMOTE_ADDR"), exc)
        return JsonResponse({"error": "invalid signature"}, status=400)
    except PaymentsError as exc:
        log.warning("Stripe webhook refused: %s", exc.message)
        return JsonResponse({"error": exc.message}, status=400)
    return JsonResponse({"received": True, "outcome": outcome})
