"""The balance through the management API: members read their tenant's balance and
journal (and a spreadsheet-safe CSV of it); only staff credit a balance, with a reason,
once per ref; staff switch the billing mode. Another tenant's balance is never shown."""

from decimal import Decimal

import pytest

from apps.audit.models import AuditEvent
from apps.tenants.models import Tenant
from apps.wallet.models import BalanceEntry
from apps.wallet.selectors import balance_get
from apps.wallet.services import balance_entry_add
from tests.api.api_support import token_client, user_client

pytestmark = pytest.mark.django_db


def grant(tenant, amount: str, ref: str = "welcome", reason: str = "welcome credit"):
    balance_entry_add(tenant=tenant, kind="grant", amount=Decimal(amount), ref=ref, reason=reason)


def staff_grant(org, tenant, **body):
    client = user_client(org.staff)
    body = {"amount": "10.00", "ref": "welcome", "reason": "trial", **body}
    return client.post(f"/api/v1/staff/tenants/{tenant.id}/grants", body, format="json")


def test_a_viewer_reads_the_balance(org):
    grant(org.acme, "12.5")
    response = user_client(org.viewer).get("/api/v1/balance")
    assert response.json()["balance"] == "12.500000000000"


def test_the_balance_says_the_billing_mode(org):
    org.acme.billing_mode = "prepaid"
    org.acme.save()
    response = token_client(org.acme_token).get("/api/v1/balance")
    assert response.json()["billing_mode"] == "prepaid"


def test_a_tenant_reads_its_own_balance_not_anothers(org):
    grant(org.acme, "12.5")
    response = token_client(org.globex_token).get("/api/v1/balance")
    assert response.json()["balance"] == "0.000000000000"


def test_another_tenants_journal_is_a_404(org):
    grant(org.acme, "12.5")
    client = token_client(org.globex_token)
    assert client.get("/api/v1/balance/entries", {"tenant": "acme"}).status_code == 404


def test_the_journal_lists_the_entries_newest_first(org):
    grant(org.acme, "1", ref="first")
    grant(org.acme, "2", ref="second")
    results = user_client(org.viewer).get("/api/v1/balance/entries").json()["results"]
    assert [e["ref"] for e in results] == ["second", "first"]


def test_the_journal_csv_neutralises_formulas(org):
    grant(org.acme, "1", ref='=HYPERLINK("http://evil")', reason="+cmd")
    response = user_client(org.viewer).get("/api/v1/balance/entries.csv")
    text = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK" in text.replace('"', "")


def test_the_journal_csv_writes_amounts_as_numbers(org):
    grant(org.acme, "1.25")
    response = user_client(org.viewer).get("/api/v1/balance/entries.csv")
    rows = b"".join(response.streaming_content).decode().splitlines()
    assert rows[1].split(",")[2] == "1.250000000000"


def test_staff_credit_a_balance(org):
    staff_grant(org, org.acme)
    assert balance_get(tenant=org.acme) == Decimal("10")


def test_a_staff_grant_with_a_used_ref_changes_nothing(org):
    staff_grant(org, org.acme)
    response = staff_grant(org, org.acme, amount="99")
    assert (response.status_code, balance_get(tenant=org.acme)) == (200, Decimal("10"))


def test_a_staff_grant_is_audited(org):
    staff_grant(org, org.acme)
    assert AuditEvent.objects.filter(tenant=org.acme, action="balance.grant").count() == 1


def test_a_staff_grant_records_who_made_it(org):
    staff_grant(org, org.acme)
    assert BalanceEntry.objects.get(tenant=org.acme).created_by == org.staff


def test_a_grant_needs_a_reason(org):
    response = staff_grant(org, org.acme, reason="")
    assert "reason" in response.json()


def test_a_negative_grant_names_the_amount(org):
    response = staff_grant(org, org.acme, amount="-5")
    assert "amount" in response.json()


def test_an_admin_token_cannot_grant(org):
    client = token_client(org.acme_token)
    response = client.post(
        f"/api/v1/staff/tenants/{org.acme.id}/grants",
        {"amount": "10", "ref": "x", "reason": "y"},
        format="json",
    )
    assert response.status_code == 403


def test_staff_switch_a_tenant_to_prepaid(org):
    client = user_client(org.staff)
    client.patch(f"/api/v1/staff/tenants/{org.acme.id}", {"billing_mode": "prepaid"}, format="json")
    assert Tenant.objects.get(id=org.acme.id).prepaid is True


def test_an_unknown_billing_mode_names_the_field(org):
    client = user_client(org.staff)
    response = client.patch(
        f"/api/v1/staff/tenants/{org.acme.id}", {"billing_mode": "free"}, format="json"
    )
    assert "billing_mode" in response.json()
