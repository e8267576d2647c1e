"""Django admin: staff add a tenant's rate card with its per-model overrides; a wrong
value is shown on its field."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from apps.billing.models import RateCard, RateCardPrice
from apps.catalog.models import Model
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


def card_form(tenant: Tenant, model: Model, **changes) -> dict:
    form = {
        "tenant": tenant.id,
        "effective_from_0": "2026-02-01",
        "effective_from_1": "00:00:00",
        "markup_percent": "50",
        "prices-TOTAL_FORMS": "1",
        "prices-INITIAL_FORMS": "0",
        "prices-0-model": model.id,
        "prices-0-input_per_mtok": "2.00",
        "prices-0-output_per_mtok": "8.00",
        "prices-0-request_fee": "0",
        "prices-0-tiers": "[]",
        "prices-0-service_tiers": "{}",
        "prices-0-byok_request_fee": "0",
    }
    form.update(changes)
    return form


@pytest.fixture
def tenant_and_model():
    return Tenant.objects.create(name="acme"), Model.objects.create(name="priced")


def test_the_rate_card_admin_add_page_has_the_override_inline(superuser_client):
    page = superuser_client.get("/admin/billing/ratecard/add/")
    assert b'name="prices-__prefix__-reasoning_per_mtok"' in page.content


def test_staff_add_a_rate_card_with_an_override_in_the_admin(superuser_client, tenant_and_model):
    tenant, model = tenant_and_model
    superuser_client.post("/admin/billing/ratecard/add/", card_form(tenant, model))
    override = RateCardPrice.objects.get(rate_card__tenant=tenant, model=model)
    assert override.output_per_mtok == Decimal(8)


def test_a_discount_over_100_percent_is_shown_on_the_markup(superuser_client, tenant_and_model):
    tenant, model = tenant_and_model
    page = superuser_client.post(
        "/admin/billing/ratecard/add/", card_form(tenant, model, markup_percent="-120")
    )
    assert page.context["adminform"].form.errors["markup_percent"] == [
        "a discount cannot exceed 100%"
    ]


def test_a_wrong_override_is_shown_on_its_field(superuser_client, tenant_and_model):
    tenant, model = tenant_and_model
    page = superuser_client.post(
        "/admin/billing/ratecard/add/",
        card_form(tenant, model, **{"prices-0-service_tiers": '{"flex": 0.5}'}),
    )
    assert page.context["inline_admin_formsets"][0].formset.errors[0]["service_tiers"] == [
        "service_tiers.flex: must be a decimal string"
    ]


def test_a_refused_rate_card_is_not_saved(superuser_client, tenant_and_model):
    tenant, model = tenant_and_model
    superuser_client.post(
        "/admin/billing/ratecard/add/", card_form(tenant, model, markup_percent="-120")
    )
    assert RateCard.objects.count() == 0


def test_the_rate_card_list_shows_the_markup(superuser_client, tenant_and_model):
    tenant, _model = tenant_and_model
    RateCard.objects.create(tenant=tenant, effective_from="2026-02-01T00:00Z", markup_percent=12)
    page = superuser_client.get("/admin/billing/ratecard/")
    assert b"12.000000" in page.content
