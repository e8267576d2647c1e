"""Auto-recharge: a prepaid balance below its threshold charges the saved card once per
window, however many balance drops and beat runs race; the credit lands once whether the
response or the webhook brings it; a decline pauses it and emails the owners once."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.alerts.tasks import alerts_deliver_due
from apps.payments.models import PaymentAccount, RechargeAttempt
from apps.payments.services import recharge_run, recharge_settings_set
from apps.wallet.selectors import balance_get
from apps.wallet.services import balance_entry_add
from tests.fakes.stripe import DECLINES_OFF_SESSION
from tests.payments.conftest import deliver, shop_make, top_up_paid

CHARGES = ("POST", "/v1/payment_intents")


def _funded(shop, fake, *, card: str = "4242424242424242", threshold="20", amount="50"):
    """A top-up of 25.00 paid (the card saved), then auto-recharge on."""
    top_up_paid(shop, fake, amount="25.00", card=card)
    deliver(Client(), fake.events("checkout.session.completed")[0])
    recharge_settings_set(
        tenant=shop.tenant, enabled=True, threshold=threshold, amount=amount, window_s=3600
    )


def _spend(shop, amount: str, ref: str) -> None:
    """A drop of the balance (as usage debits it)."""
    balance_entry_add(tenant=shop.tenant, kind="adjustment", amount=-Decimal(amount), ref=ref)


def test_above_the_threshold_nothing_is_charged(shop, fake_stripe):
    _funded(shop, fake_stripe)
    recharge_run()
    assert fake_stripe.requests(*CHARGES) == []


def test_below_the_threshold_the_card_is_charged_the_recharge_amount(shop, fake_stripe):
    _funded(shop, fake_stripe)
    _spend(shop, "10", "s1")
    recharge_run()
    [charge] = fake_stripe.requests(*CHARGES)
    assert charge["params"]["amount"] == "5000"


def test_the_charge_is_off_session_with_the_saved_card(shop, fake_stripe):
    _funded(shop, fake_stripe)
    _spend(shop, "10", "s1")
    recharge_run()
    [charge] = fake_stripe.requests(*CHARGES)
    account = PaymentAccount.objects.get(tenant=shop.tenant)
    assert (charge["params"]["off_session"], charge["params"]["payment_method"]) == (
        "true",
        account.payment_method_id,
    )


def test_a_recharge_credits_the_balance(shop, fake_stripe):
    _funded(shop, fake_stripe)
    _spend(shop, "10", "s1")
    recharge_run()
    assert balance_get(tenant=shop.tenant) == Decimal("65.00")


def test_the_webhook_of_a_credited_recharge_changes_nothing(shop, fake_stripe):
    _funded(shop, fake_stripe)
    _spend(shop, "10", "s1")
    recharge_run()
    deliver(Client(), fake_stripe.events("payment_intent.succeeded")[-1])
    assert balance_get(tenant=shop.tenant) == Decimal("65.00")


def test_many_runs_in_one_window_charge_once(shop, fake_stripe):
    _funded(shop, fake_stripe, threshold="1000")  # stays below even after the recharge
    _spend(shop, "10", "s1")
    for _ in range(5):
        recharge_run()
    assert len(fake_stripe.requests(*CHARGES)) == 1


def test_the_next_window_charges_again(shop, fake_stripe):
    _funded(shop, fake_stripe, threshold="1000")
    recharge_run()
    recharge_run(now=timezone.now() + timedelta(hours=2))
    assert len(fake_stripe.requests(*CHARGES)) == 2


def test_crossing_under_load_charges_once(transactional_db, fake_stripe):
    """Four workers, each spending a unit then running the beat's check, 40 drops across
    the threshold: one charge, one credit."""
    shop = shop_make("busy")
    _funded(shop, fake_stripe)  # 25.00, threshold 20, recharge 50
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(10):
            _spend(shop, "1", f"w{n}-{i}")
            recharge_run()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake_stripe.requests(*CHARGES)) == 1
    assert RechargeAttempt.objects.filter(tenant=shop.tenant).count() == 1
    assert balance_get(tenant=shop.tenant) == Decimal("35.00")  # 25 - 40 + 50


def test_nobody_with_auto_recharge_costs_one_query(db, fake_stripe, django_assert_num_queries):
    shop_make("idle")
    with django_assert_num_queries(1):
        recharge_run()


def test_a_postpaid_tenant_is_never_charged(shop, fake_stripe):
    _funded(shop, fake_stripe)
    _spend(shop, "10", "s1")
    shop.tenant.billing_mode = "postpaid"
    shop.tenant.save()
    recharge_run()
    assert fake_stripe.requests(*CHARGES) == []


def test_without_stripe_nothing_is_charged(shop, fake_stripe, settings):
    _funded(shop, fake_stripe)
    _spend(shop, "10", "s1")
    settings.STRIPE_SECRET_KEY = ""
    recharge_run()
    assert fake_stripe.requests(*CHARGES) == []


# Declines -----------------------------------------------------------------------------------


@pytest.fixture
def declined(shop, fake_stripe):
    """A card that paid its top-up but declines off-session charges, below its threshold,
    after one beat run."""
    _funded(shop, fake_stripe, card=DECLINES_OFF_SESSION)
    _spend(shop, "10", "s1")
    mail.outbox.clear()
    recharge_run()
    alerts_deliver_due()  # the alert's email goes out through the alerts outbox
    return shop


def test_a_decline_is_recorded_on_the_attempt(declined):
    attempt = RechargeAttempt.objects.get(tenant=declined.tenant)
    assert (attempt.status, attempt.error) == ("failed", "Your card was declined.")


def test_a_decline_pauses_auto_recharge(declined):
    assert PaymentAccount.objects.get(tenant=declined.tenant).recharge_paused_at is not None


def test_a_decline_emails_the_owner(declined):
    # an alert: one email to the tenant's owners and admins
    [message] = mail.outbox
    assert declined.owner.email in message.to


def test_a_decline_is_not_retried(declined, fake_stripe):
    for hours in (0, 2, 4):
        recharge_run(now=timezone.now() + timedelta(hours=hours))
    assert len(fake_stripe.requests(*CHARGES)) == 1


def test_the_decline_webhook_does_not_email_again(declined, fake_stripe):
    deliver(Client(), fake_stripe.events("payment_intent.payment_failed")[0])
    alerts_deliver_due()
    assert len(mail.outbox) == 1


def test_the_decline_credits_nothing(declined):
    assert balance_get(tenant=declined.tenant) == Decimal("15.00")


def test_saving_the_settings_lifts_the_pause(declined):
    recharge_settings_set(tenant=declined.tenant, enabled=True, threshold="20", amount="50")
    assert PaymentAccount.objects.get(tenant=declined.tenant).recharge_active


def test_the_balance_page_shows_the_pause(declined):
    page = Client()
    page.force_login(declined.viewer)
    assert b'data-testid="recharge-paused"' in page.get("/dashboard/balance/").content


def test_a_decline_from_every_card_pauses_too(shop, fake_stripe):
    """Stripe declines the charge (card_error 402) whatever the card: the same outcome."""
    _funded(shop, fake_stripe)
    fake_stripe.configure(decline=True)
    _spend(shop, "10", "s1")
    recharge_run()
    assert RechargeAttempt.objects.get(tenant=shop.tenant).status == "failed"
