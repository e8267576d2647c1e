"""The Balance page: members of every role read the balance, the journal and the usage
debited per day; only staff grant credit; another tenant's balance is never shown."""

from decimal import Decimal

import pytest
from django.urls import reverse

from apps.wallet.models import BalanceEntry
from apps.wallet.selectors import balance_get
from apps.wallet.services import balance_entry_add

pytestmark = pytest.mark.django_db


def grant(tenant, amount: str, ref: str = "welcome", reason: str = "welcome credit") -> None:
    balance_entry_add(tenant=tenant, kind="grant", amount=Decimal(amount), ref=ref, reason=reason)


def balance_page(client, user, **params):
    client.force_login(user)
    return client.get(reverse("dashboard:balance"), params).content.decode()


def test_a_viewer_sees_the_balance(client, team):
    grant(team.acme, "12.5")
    assert "$12.50" in balance_page(client, team.viewer)


def test_a_viewer_sees_the_journal(client, team):
    grant(team.acme, "12.5", reason="welcome credit")
    assert "welcome credit" in balance_page(client, team.viewer)


def test_a_viewer_sees_no_grant_form(client, team):
    assert "Grant credit" not in balance_page(client, team.viewer)


def test_a_member_does_not_see_another_tenants_balance(client, team):
    grant(team.globex, "77")
    assert "$77.00" not in balance_page(client, team.owner)


def test_the_page_links_the_journal_csv(client, team):
    assert reverse("api-balance-entries-csv") in balance_page(client, team.viewer)


def test_staff_see_the_grant_form(client, team):
    assert "Grant credit" in balance_page(client, team.staff, tenant="acme")


def test_staff_grant_credit(client, team):
    client.force_login(team.staff)
    client.post(
        reverse("dashboard:balance-grant") + "?tenant=acme",
        {"amount": "5", "ref": "goodwill-1", "reason": "outage"},
    )
    assert balance_get(tenant=team.acme) == Decimal("5")


def test_an_owner_cannot_grant_credit(client, team):
    client.force_login(team.owner)
    client.post(reverse("dashboard:balance-grant"), {"amount": "5", "ref": "mine", "reason": "me"})
    assert BalanceEntry.objects.filter(tenant=team.acme).count() == 0
