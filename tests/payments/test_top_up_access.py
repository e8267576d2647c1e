"""Who may start a top-up and set auto-recharge (owners only; 403 for admins, viewers and
admin tokens), the amounts accepted, and the platform without Stripe keys: top-ups off
(no button, 404s that say so), staff grants still credit."""

from decimal import Decimal

import pytest
from django.test import Client

from apps.payments.models import PaymentAccount, TopUp
from apps.tenants.services import admin_token_issue
from apps.wallet.selectors import balance_get
from apps.wallet.services import balance_entry_add
from tests.payments.conftest import WEBHOOK, shop_make

TOP_UP = "/dashboard/payments/top-up/"
AUTO = "/dashboard/payments/auto-recharge/"
API_TOP_UP = "/api/v1/balance/top-ups"
API_AUTO = "/api/v1/balance/auto-recharge"
SETTINGS = {"enabled": "on", "threshold": "10", "amount": "20", "window_minutes": "60"}


def test_an_owner_is_sent_to_stripe_checkout(shop, fake_stripe):
    answer = shop.client_of(shop.owner).post(TOP_UP, {"amount": "25"})
    assert answer["Location"].startswith(fake_stripe.url + "/checkout/cs_test_")


def test_the_checkout_asks_for_the_amount_in_cents(shop, fake_stripe):
    shop.client_of(shop.owner).post(TOP_UP, {"amount": "25.50"})
    [created] = fake_stripe.requests("POST", "/v1/checkout/sessions")
    assert created["params"]["line_items"][0]["price_data"]["unit_amount"] == "2550"


def test_the_checkout_saves_the_card_for_off_session_use(shop, fake_stripe):
    shop.client_of(shop.owner).post(TOP_UP, {"amount": "25"})
    [created] = fake_stripe.requests("POST", "/v1/checkout/sessions")
    assert created["params"]["payment_intent_data"]["setup_future_usage"] == "off_session"


def test_the_checkout_carries_the_tenant(shop, fake_stripe):
    shop.client_of(shop.owner).post(TOP_UP, {"amount": "25"})
    [created] = fake_stripe.requests("POST", "/v1/checkout/sessions")
    assert created["params"]["metadata"]["tenant_id"] == str(shop.tenant.id)


def test_a_second_top_up_reuses_the_customer(shop, fake_stripe):
    owner = shop.client_of(shop.owner)
    owner.post(TOP_UP, {"amount": "25"})
    owner.post(TOP_UP, {"amount": "30"})
    assert len(fake_stripe.requests("POST", "/v1/customers")) == 1


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_others_than_owners_cannot_top_up(shop, fake_stripe, role):
    answer = shop.client_of(getattr(shop, role)).post(TOP_UP, {"amount": "25"})
    assert answer.status_code == 403


def test_a_refused_top_up_opens_no_checkout(shop, fake_stripe):
    shop.client_of(shop.admin).post(TOP_UP, {"amount": "25"})
    assert fake_stripe.requests("POST", "/v1/checkout/sessions") == []


@pytest.mark.parametrize("amount", ["4.99", "10000.01", "12.345", "-5", "abc", ""])
def test_an_amount_out_of_bounds_opens_no_checkout(shop, fake_stripe, amount):
    answer = shop.client_of(shop.owner).post(TOP_UP, {"amount": amount}, follow=True)
    assert b"Top-up amount" in answer.content
    assert TopUp.objects.count() == 0


def test_a_postpaid_tenant_cannot_top_up(shop, fake_stripe):
    shop.tenant.billing_mode = "postpaid"
    shop.tenant.save()
    answer = shop.client_of(shop.owner).post(TOP_UP, {"amount": "25"}, follow=True)
    assert b"top-ups are for prepaid tenants" in answer.content


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_others_than_owners_cannot_set_auto_recharge(shop, fake_stripe, role):
    answer = shop.client_of(getattr(shop, role)).post(AUTO, SETTINGS)
    assert answer.status_code == 403


def test_an_owner_sets_auto_recharge(shop, fake_stripe):
    shop.client_of(shop.owner).post(AUTO, SETTINGS)
    account = PaymentAccount.objects.get(tenant=shop.tenant)
    assert (account.recharge_enabled, account.recharge_threshold, account.recharge_amount) == (
        True,
        Decimal("10.00"),
        Decimal("20.00"),
    )


def test_an_owner_turns_auto_recharge_off_without_amounts(shop, fake_stripe):
    owner = shop.client_of(shop.owner)
    owner.post(AUTO, SETTINGS)
    owner.post(AUTO, {"enabled": ""})
    assert not PaymentAccount.objects.get(tenant=shop.tenant).recharge_enabled


def test_turning_auto_recharge_off_keeps_the_saved_amounts(shop, fake_stripe):
    owner = shop.client_of(shop.owner)
    owner.post(AUTO, SETTINGS)
    owner.post(AUTO, {"enabled": ""})
    account = PaymentAccount.objects.get(tenant=shop.tenant)
    assert (account.recharge_threshold, account.recharge_amount) == (
        Decimal("10.00"),
        Decimal("20.00"),
    )


def test_turning_auto_recharge_on_needs_an_amount(shop, fake_stripe):
    answer = shop.client_of(shop.owner).post(
        AUTO, {"enabled": "on", "threshold": "10"}, follow=True
    )
    assert b"Auto-recharge amount: This field is required" in answer.content


def test_a_viewer_sees_the_panel_without_controls(shop, fake_stripe):
    page = shop.client_of(shop.viewer).get("/dashboard/balance/").content.decode()
    assert 'data-testid="payments-panel"' in page
    assert 'data-testid="top-up-form"' not in page
    assert 'data-testid="auto-recharge-form"' not in page


def test_an_owner_sees_the_controls(shop, fake_stripe):
    page = shop.client_of(shop.owner).get("/dashboard/balance/").content.decode()
    assert 'data-testid="top-up-form"' in page
    assert 'data-testid="auto-recharge-form"' in page


# Management API ----------------------------------------------------------------------------


def test_an_owner_starts_a_top_up_through_the_api(shop, fake_stripe):
    answer = shop.client_of(shop.owner).post(
        API_TOP_UP, {"amount": "25"}, content_type="application/json"
    )
    assert answer.status_code == 201
    assert answer.json()["url"].startswith(fake_stripe.url + "/checkout/")


def test_an_admin_token_cannot_top_up(shop, fake_stripe):
    """An admin token acts as admin at most: owners only means no token."""
    _, secret = admin_token_issue(tenant=shop.tenant, name="ci", actor=shop.owner)
    answer = Client().post(
        API_TOP_UP, {"amount": "25"}, content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )  # fmt: skip
    assert answer.status_code == 403


def test_a_viewer_cannot_top_up_through_the_api(shop, fake_stripe):
    answer = shop.client_of(shop.viewer).post(
        API_TOP_UP, {"amount": "25"}, content_type="application/json"
    )
    assert answer.status_code == 403


def test_the_api_refuses_an_amount_out_of_bounds(shop, fake_stripe):
    answer = shop.client_of(shop.owner).post(
        API_TOP_UP, {"amount": "1"}, content_type="application/json"
    )
    assert answer.json() == {"amount": ["must be between 5 and 10000"]}


def test_a_viewer_reads_the_auto_recharge_settings(shop, fake_stripe):
    answer = shop.client_of(shop.viewer).get(API_AUTO)
    assert answer.json()["enabled"] is False


def test_a_viewer_cannot_put_auto_recharge(shop, fake_stripe):
    body = {"enabled": True, "threshold": "10", "amount": "20"}
    answer = shop.client_of(shop.viewer).put(API_AUTO, body, content_type="application/json")
    assert answer.status_code == 403


def test_an_owner_puts_auto_recharge(shop, fake_stripe):
    body = {"enabled": True, "threshold": "10", "amount": "20", "window_s": 1800}
    answer = shop.client_of(shop.owner).put(API_AUTO, body, content_type="application/json")
    assert (answer.json()["enabled"], answer.json()["window_s"]) == (True, 1800)


def test_an_unknown_field_is_refused(shop, fake_stripe):
    body = {"enabled": True, "threshold": "10", "amount": "20", "treshold": "5"}
    answer = shop.client_of(shop.owner).put(API_AUTO, body, content_type="application/json")
    assert answer.status_code == 400


# Without Stripe ----------------------------------------------------------------------------


def test_without_stripe_the_top_up_form_is_hidden(shop):
    page = shop.client_of(shop.owner).get("/dashboard/balance/").content.decode()
    assert 'data-testid="payments-panel"' not in page


def test_without_stripe_a_top_up_is_a_404(shop):
    assert shop.client_of(shop.owner).post(TOP_UP, {"amount": "25"}).status_code == 404


def test_without_stripe_the_api_says_top_ups_are_off(shop):
    answer = shop.client_of(shop.owner).post(
        API_TOP_UP, {"amount": "25"}, content_type="application/json"
    )
    assert answer.json() == {
        "detail": "Top-ups are off on this platform (Stripe is not configured)."
    }


def test_without_stripe_auto_recharge_cannot_be_turned_on(shop):
    body = {"enabled": True, "threshold": "10", "amount": "20"}
    answer = shop.client_of(shop.owner).put(API_AUTO, body, content_type="application/json")
    assert answer.status_code == 404


def test_without_stripe_the_webhook_is_a_404(db):
    answer = Client().post(WEBHOOK, data=b"{}", content_type="application/json")
    assert answer.status_code == 404


def test_without_stripe_staff_grants_still_credit(db):
    shop = shop_make("granted")
    balance_entry_add(
        tenant=shop.tenant, kind="grant", amount=Decimal("10"), ref="welcome", reason="welcome"
    )
    assert balance_get(tenant=shop.tenant) == Decimal("10")


def test_without_stripe_the_balance_page_shows_the_balance(db):
    shop = shop_make("granted")
    balance_entry_add(tenant=shop.tenant, kind="grant", amount=Decimal("10"), ref="welcome")
    page = shop.client_of(shop.viewer).get("/dashboard/balance/").content.decode()
    assert "$10.00" in page
