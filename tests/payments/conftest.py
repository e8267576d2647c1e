"""Payments fixtures: the fake Stripe (tests/fakes/stripe.py, its own process) reached
through the real ``stripe`` library, a prepaid tenant with an owner, an admin and a
viewer, and helpers to pay a checkout and replay the webhooks Stripe would send."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from django.test import Client

from apps.tenants.models import BillingMode, Membership, Tenant
from tests.conftest import PYTHON, Process, free_port
from tests.dashboard.conftest import make_user

SECRET_KEY = "sk_test_tollgate_fake_0123456789"
WEBHOOK_SECRET = "whsec_tollgate_fake_0123456789"
WEBHOOK = "/payments/stripe/webhook"


@pytest.fixture(scope="session")
def fake_stripe_url() -> Iterator[str]:
    port = free_port()
    process = Process(
        "stripe", [PYTHON, "tests/fakes/stripe.py", "--port", str(port)], dict(os.environ), port
    )
    yield f"http://127.0.0.1:{port}"
    process.stop()


@dataclass
class FakeStripe:
    url: str

    def configure(self, **config) -> None:
        httpx.post(self.url + "/_config", json=config).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(self.url + "/_stats").json()

    def events(self, kind: str | None = None) -> list[dict]:
        return [e for e in self.stats()["events"] if kind is None or e["type"] == kind]

    def requests(self, method: str, path: str) -> list[dict]:
        return [r for r in self.stats()["requests"] if r["method"] == method and r["path"] == path]

    def pay(self, checkout_url: str, card: str = "4242424242424242") -> httpx.Response:
        """What the payer's browser does on the hosted page: submit the card."""
        return httpx.post(checkout_url, data={"card": card}, follow_redirects=False)


@pytest.fixture
def fake_stripe(fake_stripe_url, settings) -> FakeStripe:
    """Stripe configured (in this process) and pointed at the fake; webhooks are recorded
    by the fake, not delivered: tests deliver them, as often and in the order they want."""
    httpx.post(fake_stripe_url + "/_reset").raise_for_status()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = fake_stripe_url
    fake = FakeStripe(fake_stripe_url)
    fake.configure(webhook_secret=WEBHOOK_SECRET, deliver=False, decline=False, webhook_url="")
    return fake


@dataclass
class Shop:
    tenant: Tenant
    owner: object
    admin: object
    viewer: object

    def client_of(self, user) -> Client:
        client = Client()
        client.force_login(user)
        return client


def shop_make(name: str = "acme") -> Shop:
    tenant = Tenant.objects.create(name=name, billing_mode=BillingMode.PREPAID)
    return Shop(
        tenant=tenant,
        owner=make_user(f"{name}-owner", tenant=tenant, role=Membership.Role.OWNER),
        admin=make_user(f"{name}-admin", tenant=tenant, role=Membership.Role.ADMIN),
        viewer=make_user(f"{name}-viewer", tenant=tenant, role=Membership.Role.VIEWER),
    )


@pytest.fixture(autouse=True)
def _quiet() -> None:
    """The library logs every request at INFO."""
    logging.getLogger("stripe").setLevel(logging.WARNING)


@pytest.fixture
def shop(db, settings) -> Shop:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # quick users
    return shop_make()


def deliver(client: Client, event: dict, *, signature: str | None = None):
    """Post a recorded webhook to Tollgate as Stripe does (its body and signature)."""
    return client.post(
        WEBHOOK,
        data=event["payload"].encode(),
        content_type="application/json; charset=utf-8",
        headers={"Stripe-Signature": event["signature"] if signature is None else signature},
    )


def top_up_paid(
    shop: Shop, fake: FakeStripe, amount: str = "25.00", card: str = "4242424242424242"
):
    """An owner starts a top-up on the dashboard and pays it on the fake checkout page;
    the webhooks are recorded, not yet delivered. Returns the checkout session id."""
    answer = shop.client_of(shop.owner).post("/dashboard/payments/top-up/", {"amount": amount})
    assert answer.status_code == 302, answer.content
    paid = fake.pay(answer["Location"], card=card)
    assert paid.status_code == 303, paid.text
    return answer["Location"].rsplit("/", 1)[1]


ZERO = Decimal("0")
