"""Writes of the payments app, one module per flow:

    accounts.py   the tenant's Stripe customer and saved card, auto-recharge settings
    topups.py     a top-up: the Checkout Session an owner starts
    events.py     Stripe's webhook events, each handled once; credits top-ups and recharges
    recharge.py   auto-recharge: the beat's check, the claim per window, the charge

Each credit goes through apps.wallet.services.balance_entry_add (kind "topup") under the
Stripe object's id as ref: a checkout session id for a top-up, a payment intent id for a
recharge. Whatever path, order or number of deliveries brings it, it is credited once.
"""

from apps.payments.services.accounts import (
    PaymentsError,
    PaymentsOff,
    payment_account_ensure,
    recharge_settings_set,
)
from apps.payments.services.events import stripe_event_receive
from apps.payments.services.recharge import recharge_check, recharge_run
from apps.payments.services.topups import top_up_start

__all__ = [
    "PaymentsError",
    "PaymentsOff",
    "payment_account_ensure",
    "recharge_check",
    "recharge_run",
    "recharge_settings_set",
    "stripe_event_receive",
    "top_up_start",
]
