"""Reads of the payments app, through ``for_tenant`` like every tenant-scoped read."""

from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet

from apps.payments.models import PaymentAccount, RechargeAttempt, TopUp
from apps.tenants.models import Tenant


def payments_enabled() -> bool:
    """Top-ups and auto-recharge need both Stripe secrets: without the webhook secret no
    payment could ever be credited."""
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def topup_bounds() -> tuple[Decimal, Decimal]:
    return Decimal(settings.PAYMENTS_TOPUP_MIN), Decimal(settings.PAYMENTS_TOPUP_MAX)


def payment_account_get(*, tenant: Tenant) -> PaymentAccount | None:
    return PaymentAccount.objects.for_tenant(tenant).first()


def top_up_list(*, tenant: Tenant) -> QuerySet[TopUp]:
    return TopUp.objects.for_tenant(tenant)


def recharge_attempt_list(*, tenant: Tenant) -> QuerySet[RechargeAttempt]:
    return RechargeAttempt.objects.for_tenant(tenant)
