"""Payments through Stripe: top-ups of prepaid balances and auto-recharge.

    stripe_api.py   the seam: the only importer of the ``stripe`` library; its errors
                    become PaymentError / CardDeclined / BadSignature here, once
    models.py       PaymentAccount (customer, saved card, auto-recharge settings), TopUp
                    (a Checkout Session we opened), RechargeAttempt (one per window),
                    StripeEvent (each webhook event id, once)
    selectors.py    reads (payments_enabled: both Stripe secrets set)
    services/       writes: top_up_start, stripe_event_receive, recharge_settings_set,
                    recharge_run (the beat task in tasks.py)
    views.py        the webhook (POST /payments/stripe/webhook: Stripe's signature is
                    its only authentication)
    api.py          management API: /api/v1/balance/top-ups, /api/v1/balance/auto-recharge

Money reaches the balance only through apps.wallet.services.balance_entry_add (kind
"topup"), under the Stripe object's id as ref. Imports go from here to wallet, tenants,
audit; never back. The dashboard's views (apps/dashboard/views/payments.py) call these
services.
"""
