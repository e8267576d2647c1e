"""A tenant's billing mode and grants as config-as-code: each grant credited once per ref,
invalid values named by their path."""

from decimal import Decimal

import pytest

from apps.provisioning.services import ConfigError, config_apply
from apps.tenants.models import Tenant
from apps.wallet.models import BalanceEntry
from apps.wallet.selectors import balance_get

pytestmark = pytest.mark.django_db


def document(**tenant) -> dict:
    return {"tenants": [{"name": "acme", **tenant}]}


WELCOME = {"ref": "welcome", "amount": "10.00", "reason": "welcome credit"}


def test_a_tenant_is_postpaid_unless_configured():
    config_apply(document=document())
    assert Tenant.objects.get(name="acme").billing_mode == "postpaid"


def test_config_makes_a_tenant_prepaid():
    config_apply(document=document(billing_mode="prepaid"))
    assert Tenant.objects.get(name="acme").prepaid is True


def test_a_grant_credits_the_balance():
    config_apply(document=document(billing_mode="prepaid", grants=[WELCOME]))
    assert balance_get(tenant=Tenant.objects.get(name="acme")) == Decimal("10")


def test_applying_a_grant_twice_credits_it_once():
    config_apply(document=document(grants=[WELCOME]))
    config_apply(document=document(grants=[WELCOME]))
    assert BalanceEntry.objects.count() == 1


def test_the_ref_is_stored_as_given():
    config_apply(document=document(grants=[{**WELCOME, "ref": "Welcome-2026"}]))
    assert BalanceEntry.objects.get().ref == "Welcome-2026"


@pytest.mark.parametrize(
    ("tenant", "path"),
    [
        ({"billing_mode": "free"}, "tenants[0].billing_mode"),
        ({"grants": [{**WELCOME, "amount": "-1"}]}, "tenants[0].grants[0].amount"),
        ({"grants": [{**WELCOME, "amount": 10.5}]}, "tenants[0].grants[0].amount"),
        ({"grants": [{**WELCOME, "amount": "0.0000001"}]}, "tenants[0].grants[0].amount"),
        ({"grants": [{"amount": "1"}]}, "tenants[0].grants[0].ref"),
        ({"grants": [{**WELCOME, "colour": "red"}]}, "tenants[0].grants[0].colour"),
        ({"grants": {"ref": "x"}}, "tenants[0].grants"),
    ],
)
def test_an_invalid_value_names_its_path(tenant, path):
    with pytest.raises(ConfigError) as caught:
        config_apply(document=document(**tenant))
    assert caught.value.path == path


def test_an_invalid_grant_changes_nothing():
    with pytest.raises(ConfigError):
        config_apply(document=document(grants=[WELCOME, {**WELCOME, "ref": "b", "amount": "x"}]))
    assert BalanceEntry.objects.count() == 0
