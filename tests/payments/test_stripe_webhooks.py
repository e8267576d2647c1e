"""Stripe's webhook credits a paid top-up exactly once: under duplicate, out-of-order and
replayed deliveries, and concurrent ones; a forged, tampered or stale delivery is a 400
and changes nothing. The events are the fake Stripe's, signed as Stripe signs them."""

import json
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from apps.payments.models import PaymentAccount, StripeEvent, TopUp
from apps.wallet.models import BalanceEntry
from apps.wallet.selectors import balance_get
from tests.fakes.stripe import stripe_signature
from tests.payments.conftest import WEBHOOK_SECRET, deliver, shop_make, top_up_paid


def _completed(fake) -> dict:
    return fake.events("checkout.session.completed")[0]


def _resigned(delivery: dict, *, timestamp: int | None = None, envelope=None, **changes) -> dict:
    """The delivery with fields of its object (``envelope``: of the event) changed, and
    Stripe's signature over the new body."""
    body = json.loads(delivery["payload"])
    body.update(envelope or {})
    body["data"]["object"].update(changes)
    payload = json.dumps(body)
    signature = stripe_signature(payload, WEBHOOK_SECRET, timestamp)
    return {**delivery, "payload": payload, "signature": signature}


def test_a_paid_checkout_credits_its_amount(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    answer = deliver(Client(), _completed(fake_stripe))
    assert answer.status_code == 200
    assert balance_get(tenant=shop.tenant) == Decimal("25.00")


def test_the_credit_is_a_topup_entry_under_the_session_id(shop, fake_stripe):
    session_id = top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _completed(fake_stripe))
    entry = BalanceEntry.objects.get(tenant=shop.tenant)
    assert (entry.kind, entry.ref) == ("topup", session_id)


def test_the_top_up_shows_paid(shop, fake_stripe):
    session_id = top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _completed(fake_stripe))
    assert TopUp.objects.get(session_id=session_id).status == "paid"


def test_duplicate_deliveries_credit_once(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    client = Client()
    answers = [deliver(client, _completed(fake_stripe)).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    assert balance_get(tenant=shop.tenant) == Decimal("25.00")


def test_a_retry_resigned_by_stripe_credits_once(shop, fake_stripe):
    """Stripe re-signs each retry with a fresh timestamp: the event id makes it a no-op."""
    top_up_paid(shop, fake_stripe, amount="25.00")
    event = _completed(fake_stripe)
    deliver(Client(), event)
    later = _resigned(event, timestamp=int(time.time()) + 5)
    assert deliver(Client(), later).json()["outcome"] == "duplicate"
    assert balance_get(tenant=shop.tenant) == Decimal("25.00")


def test_another_event_for_the_same_session_credits_once(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    event = _completed(fake_stripe)
    deliver(Client(), event)
    other = _resigned(
        event, envelope={"id": "evt_other", "type": "checkout.session.async_payment_succeeded"}
    )
    assert deliver(Client(), other).json()["outcome"] == "already credited"
    assert balance_get(tenant=shop.tenant) == Decimal("25.00")


def test_out_of_order_events_credit_once(shop, fake_stripe):
    """The payment intent's event first (it is the top-up's: its session credits), then the
    session's, then the intent's again."""
    top_up_paid(shop, fake_stripe, amount="25.00")
    client = Client()
    intent = fake_stripe.events("payment_intent.succeeded")[0]
    deliver(client, intent)
    assert balance_get(tenant=shop.tenant) == Decimal("0")
    deliver(client, _completed(fake_stripe))
    deliver(client, _resigned(intent, envelope={"id": "evt_intent_again"}))
    assert balance_get(tenant=shop.tenant) == Decimal("25.00")


def test_concurrent_duplicates_credit_once(transactional_db, fake_stripe):
    shop = shop_make("rush")
    top_up_paid(shop, fake_stripe, amount="40.00")
    event = _completed(fake_stripe)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        try:
            barrier.wait()
            statuses.append(deliver(Client(), event).status_code)
        finally:
            connection.close()  # back to the pool: a thread's connection is not reaped

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert balance_get(tenant=shop.tenant) == Decimal("40.00")


def test_the_card_is_saved_for_auto_recharge(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _completed(fake_stripe))
    intent = json.loads(fake_stripe.events("payment_intent.succeeded")[0]["payload"])
    account = PaymentAccount.objects.get(tenant=shop.tenant)
    assert account.payment_method_id == intent["data"]["object"]["payment_method"]


def test_the_saved_card_is_shown_by_brand_and_last_digits(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _completed(fake_stripe))
    assert PaymentAccount.objects.get(tenant=shop.tenant).payment_method_label == "visa •••• 4242"


# Refused deliveries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "t=1,v1=deadbeef",
        "garbage",
        "v1=" + "0" * 64,
    ],
)
def test_a_delivery_without_a_valid_signature_is_refused(shop, fake_stripe, signature):
    top_up_paid(shop, fake_stripe, amount="25.00")
    answer = deliver(Client(), _completed(fake_stripe), signature=signature)
    assert answer.status_code == 400


def test_a_refused_delivery_changes_nothing(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _completed(fake_stripe), signature="t=1,v1=deadbeef")
    assert balance_get(tenant=shop.tenant) == Decimal("0")


def test_a_refused_delivery_is_not_remembered(shop, fake_stripe):
    """So that Stripe's genuine delivery of the same event still counts."""
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _completed(fake_stripe), signature="t=1,v1=deadbeef")
    assert StripeEvent.objects.count() == 0


def test_a_payload_signed_with_another_secret_is_refused(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    event = _completed(fake_stripe)
    forged = stripe_signature(event["payload"], "whsec_someone_else")
    assert deliver(Client(), event, signature=forged).status_code == 400


def test_a_tampered_amount_is_refused(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    event = _completed(fake_stripe)
    tampered = {
        **event,
        "payload": event["payload"].replace('"amount_total": 2500', '"amount_total": 999900'),
    }
    assert tampered["payload"] != event["payload"]
    deliver(Client(), tampered)
    assert balance_get(tenant=shop.tenant) == Decimal("0")


def test_a_stale_timestamp_is_refused(shop, fake_stripe):
    """A genuine signature older than the tolerance (5 minutes): a replay."""
    top_up_paid(shop, fake_stripe, amount="25.00")
    stale = _resigned(_completed(fake_stripe), timestamp=int(time.time()) - 600)
    assert deliver(Client(), stale).status_code == 400


def test_a_stale_delivery_changes_nothing(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _resigned(_completed(fake_stripe), timestamp=int(time.time()) - 600))
    assert balance_get(tenant=shop.tenant) == Decimal("0")


def test_a_refusal_is_logged(shop, fake_stripe, caplog):
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _completed(fake_stripe), signature="t=1,v1=deadbeef")
    assert "Stripe webhook refused" in caplog.text


def test_a_signed_body_that_is_not_json_is_a_400(shop, fake_stripe):
    payload = "not json"
    answer = deliver(
        Client(), {"payload": payload, "signature": stripe_signature(payload, WEBHOOK_SECRET)}
    )
    assert answer.status_code == 400


def test_a_signed_event_without_an_object_is_a_400(shop, fake_stripe):
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "checkout.session.completed"})
    answer = deliver(
        Client(), {"payload": payload, "signature": stripe_signature(payload, WEBHOOK_SECRET)}
    )
    assert answer.status_code == 400


# Sessions that are not (or not exactly) ours -----------------------------------------------


def test_a_session_tollgate_did_not_open_is_not_credited(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    stranger = _resigned(_completed(fake_stripe), envelope={"id": "evt_x"}, id="cs_test_not_ours")
    deliver(Client(), stranger)
    assert balance_get(tenant=shop.tenant) == Decimal("0")


def test_another_currency_is_not_credited(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _resigned(_completed(fake_stripe), currency="eur"))
    assert balance_get(tenant=shop.tenant) == Decimal("0")


def test_an_unpaid_session_is_not_credited(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _resigned(_completed(fake_stripe), payment_status="unpaid"))
    assert balance_get(tenant=shop.tenant) == Decimal("0")


def test_metadata_naming_another_tenant_is_not_credited(shop, fake_stripe):
    top_up_paid(shop, fake_stripe, amount="25.00")
    other = shop_make("globex")
    event = _completed(fake_stripe)
    metadata = {
        **json.loads(event["payload"])["data"]["object"]["metadata"],
        "tenant_id": str(other.tenant.id),
    }
    deliver(Client(), _resigned(event, metadata=metadata))
    assert balance_get(tenant=shop.tenant) + balance_get(tenant=other.tenant) == Decimal("0")


def test_stripe_amount_is_credited_not_the_one_asked(shop, fake_stripe):
    """Stripe's amount_total is what was paid (a coupon, say): that is the credit."""
    top_up_paid(shop, fake_stripe, amount="25.00")
    deliver(Client(), _resigned(_completed(fake_stripe), amount_total=2000))
    assert balance_get(tenant=shop.tenant) == Decimal("20.00")
