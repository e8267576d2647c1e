"""Django admin: staff edit a model's budget bounds."""

import pytest
from django.contrib.auth import get_user_model

from apps.catalog.models import Model

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


def test_the_model_admin_page_shows_the_budget_bounds(superuser_client):
    model = Model.objects.create(name="bounded")
    page = superuser_client.get(f"/admin/catalog/model/{model.id}/change/")
    assert b"prompt_allowance_per_request" in page.content


def test_the_model_admin_saves_a_maximum_output(superuser_client):
    model = Model.objects.create(name="bounded")
    superuser_client.post(
        f"/admin/catalog/model/{model.id}/change/",
        {
            "name": "bounded",
            "aliases": "[]",
            "display_name": "",
            "enabled": "on",
            "prompt_allowance_per_request": "512",
            "prompt_allowance_per_message": "32",
            "image_token_bound": "4096",
            "max_output_tokens": "8192",
            "strategy": "weighted",
            "affinity_key": "prompt_cache_key",
            "deployments-TOTAL_FORMS": "0",
            "deployments-INITIAL_FORMS": "0",
            "prices-TOTAL_FORMS": "0",
            "prices-INITIAL_FORMS": "0",
        },
    )
    model.refresh_from_db()
    assert model.max_output_tokens == 8192


PRICE_FORM = {
    "effective_from_0": "2026-01-01",
    "effective_from_1": "00:00:00",
    "input_per_mtok": "1.00",
    "cached_input_per_mtok": "",
    "cache_write_5m_per_mtok": "",
    "cache_write_1h_per_mtok": "",
    "output_per_mtok": "2.00",
    "reasoning_per_mtok": "",
    "request_fee": "0",
    "tiers": '[{"above_prompt_tokens": 200000, "input_per_mtok": "2.00"}]',
    "service_tiers": '{"flex": "0.5"}',
    "byok_fee_percent": "",
    "byok_request_fee": "0",
}


def test_the_price_admin_page_shows_every_rule_field(superuser_client):
    page = superuser_client.get("/admin/catalog/price/add/").content.decode()
    missing = [
        f
        for f in ("cache_write_1h_per_mtok", "reasoning_per_mtok", "tiers", "service_tiers")
        + ("byok_fee_percent", "byok_request_fee", "request_fee")
        if f'name="{f}"' not in page
    ]
    assert missing == []


def test_the_price_admin_saves_tiers_and_service_tiers(superuser_client):
    from apps.catalog.models import Price

    model = Model.objects.create(name="priced")
    superuser_client.post("/admin/catalog/price/add/", {**PRICE_FORM, "model": model.id})
    assert Price.objects.get(model=model).tiers == [
        {"above_prompt_tokens": 200000, "input_per_mtok": "2.00"}
    ]


def test_a_wrong_tier_is_shown_on_the_tiers_field(superuser_client):
    model = Model.objects.create(name="priced")
    page = superuser_client.post(
        "/admin/catalog/price/add/",
        {
            **PRICE_FORM,
            "model": model.id,
            "tiers": '[{"above_prompt_tokens": 5, "input_per_mtok": 2.5}]',
        },
    )
    assert page.context["adminform"].form.errors["tiers"] == [
        "tiers[0].input_per_mtok: must be a decimal string"
    ]


def test_the_model_page_shows_its_prices_rule_fields(superuser_client):
    model = Model.objects.create(name="bounded")
    page = superuser_client.get(f"/admin/catalog/model/{model.id}/change/")
    assert b'name="prices-__prefix__-service_tiers"' in page.content
