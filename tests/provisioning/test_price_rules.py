"""Price rules and tenant rate cards in config-as-code: every field is stored as written,
a second apply changes nothing, and a wrong value is refused naming its document path
and the field."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.billing.models import RateCard, RateCardPrice
from apps.catalog.models import Price
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db

FULL_PRICE = {
    "effective_from": "2026-01-01",
    "input_per_mtok": "3.00",
    "cached_input_per_mtok": "0.30",
    "cache_write_5m_per_mtok": "3.75",
    "cache_write_1h_per_mtok": "6.00",
    "output_per_mtok": "15.00",
    "reasoning_per_mtok": "20.00",
    "request_fee": "0.001",
    "tiers": [
        {"above_prompt_tokens": 200000, "input_per_mtok": "6.00", "output_per_mtok": "22.50"}
    ],
    "service_tiers": {"flex": "0.5", "priority": "2.0"},
    "byok_fee_percent": "5",
    "byok_request_fee": "0.0001",
}


def document(*prices: dict, tenant: dict | None = None) -> dict:
    doc = {
        "models": [
            {
                "name": "plain-model",
                "prices": [{"effective_from": "2026-01-01", "input_per_mtok": "1"}],
            },
            {"name": "rich-model", "prices": list(prices)},
        ]
    }
    if tenant is not None:
        doc["tenants"] = [{"name": "acme", **tenant}]
    return doc


def rich_price() -> Price:
    return Price.objects.get(model__name="rich-model")


def refused(doc: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        config_apply(document=doc)
    return str(caught.value)


# Price rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,stored",
    [
        ("input_per_mtok", Decimal("3")),
        ("cached_input_per_mtok", Decimal("0.3")),
        ("cache_write_5m_per_mtok", Decimal("3.75")),
        ("cache_write_1h_per_mtok", Decimal("6")),
        ("output_per_mtok", Decimal("15")),
        ("reasoning_per_mtok", Decimal("20")),
        ("request_fee", Decimal("0.001")),
        ("byok_fee_percent", Decimal("5")),
        ("byok_request_fee", Decimal("0.0001")),
    ],
)
def test_every_rate_and_fee_is_stored_as_written(field, stored):
    config_apply(document=document(FULL_PRICE))
    assert getattr(rich_price(), field) == stored


def test_long_context_tiers_are_stored():
    config_apply(document=document(FULL_PRICE))
    assert rich_price().tiers == [
        {"above_prompt_tokens": 200000, "input_per_mtok": "6.00", "output_per_mtok": "22.50"}
    ]


def test_service_tier_multipliers_are_stored():
    config_apply(document=document(FULL_PRICE))
    assert rich_price().service_tiers == {"flex": "0.5", "priority": "2.0"}


def test_a_second_apply_of_a_full_rule_changes_nothing():
    config_apply(document=document(FULL_PRICE))
    assert config_apply(document=document(FULL_PRICE)).changes == []


def test_optional_rates_left_out_follow_their_default():
    config_apply(document=document({"effective_from": "2026-01-01", "input_per_mtok": "2"}))
    price = rich_price()
    assert (price.cached_input_per_mtok, price.reasoning_per_mtok) == (None, None)


def test_the_same_effective_from_updates_the_version_in_place():
    config_apply(document=document(FULL_PRICE))
    config_apply(document=document({**FULL_PRICE, "service_tiers": {"flex": "0.25"}}))
    assert rich_price().service_tiers == {"flex": "0.25"}


def test_a_new_effective_from_adds_a_version():
    config_apply(document=document(FULL_PRICE))
    config_apply(document=document(FULL_PRICE, {**FULL_PRICE, "effective_from": "2026-06-01"}))
    assert Price.objects.filter(model__name="rich-model").count() == 2


PATH = "models[1].prices[0]"


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"input_per_mtok": None}, f"{PATH}.input_per_mtok: is required"),
        ({"output_per_mtok": True}, f"{PATH}.output_per_mtok: must be a decimal string"),
        (
            {"cached_input_per_mtok": ["1"]},
            f"{PATH}.cached_input_per_mtok: must be a decimal string",
        ),
        ({"reasoning_per_mtok": 0.5}, f"{PATH}.reasoning_per_mtok: must be a decimal string"),
        ({"request_fee": "-1"}, f"{PATH}.request_fee: must not be negative"),
        ({"input_per_mtok": "1e400"}, f"{PATH}.input_per_mtok: is too large"),
        ({"input_per_mtok": "NaN"}, f"{PATH}.input_per_mtok: must be a finite number"),
        ({"input_per_mtok": "abc"}, f"{PATH}.input_per_mtok: must be a decimal string"),
        ({"output_per_mtok": "0.0000001"}, f"{PATH}.output_per_mtok: has more than 6 decimal"),
        ({"byok_fee_percent": "Infinity"}, f"{PATH}.byok_fee_percent: must be a finite number"),
        ({"tiers": {"above_prompt_tokens": 1}}, f"{PATH}.tiers: must be a list"),
        ({"tiers": "200000"}, f"{PATH}.tiers: must be a list"),
        ({"tiers": [5]}, f"{PATH}.tiers[0]: must be an object"),
        (
            {"tiers": [{"above_prompt_tokens": 1000, "input_per_mtok": 2.5}]},
            f"{PATH}.tiers[0].input_per_mtok: must be a decimal string",
        ),
        (
            {
                "tiers": [
                    {"above_prompt_tokens": 10},
                    {"above_prompt_tokens": 20, "output_per_mtok": "x"},
                ]
            },
            f"{PATH}.tiers[1].output_per_mtok: must be a decimal string",
        ),
        (
            {"tiers": [{"above_prompt_tokens": "200000"}]},
            f"{PATH}.tiers[0].above_prompt_tokens: must be a positive integer",
        ),
        (
            {"tiers": [{"above_prompt_tokens": 0}]},
            f"{PATH}.tiers[0].above_prompt_tokens: must be a positive integer",
        ),
        (
            {"tiers": [{"above_prompt_tokens": 10}, {"above_prompt_tokens": 10}]},
            f"{PATH}.tiers: two tiers have the same above_prompt_tokens",
        ),
        (
            {"tiers": [{"above_prompt_tokens": 10, "fee": "1"}]},
            f"{PATH}.tiers[0].fee: is not a tier field",
        ),
        ({"service_tiers": ["flex"]}, f"{PATH}.service_tiers: must be an object"),
        ({"service_tiers": {"flex": None}}, f"{PATH}.service_tiers.flex: must be a decimal string"),
        ({"service_tiers": {"flex": "-0.5"}}, f"{PATH}.service_tiers.flex: must not be negative"),
        ({"service_tiers": {"fl\x00ex": "1"}}, f"{PATH}.service_tiers: tier names are short"),
        ({"cost_per_mtok": "1"}, f"{PATH}.cost_per_mtok: unknown field"),
    ],
)
def test_a_wrong_value_is_refused_naming_its_path_and_field(change, expected):
    message = refused(document({**FULL_PRICE, **change}))
    assert message.startswith(expected), message


def test_a_refused_document_changes_nothing():
    config_apply(document=document(FULL_PRICE))
    refused(document({**FULL_PRICE, "input_per_mtok": "4", "request_fee": "-1"}))
    assert rich_price().input_per_mtok == Decimal("3")


# Rate cards ------------------------------------------------------------------------------

CARD = {
    "effective_from": "2026-02-01",
    "markup_percent": "50",
    "models": {"rich-model": {"input_per_mtok": "2.00", "output_per_mtok": "8.00"}},
}


def test_a_tenants_rate_card_is_created_with_its_markup():
    config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD}))
    card = RateCard.objects.get(tenant__name="acme")
    assert card.markup_percent == Decimal("50")


def test_a_rate_card_starts_at_its_effective_from():
    config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD}))
    card = RateCard.objects.get(tenant__name="acme")
    assert card.effective_from == datetime(2026, 2, 1, tzinfo=UTC)


def test_a_rate_cards_model_override_is_stored():
    config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD}))
    override = RateCardPrice.objects.get(rate_card__tenant__name="acme", model__name="rich-model")
    assert (override.input_per_mtok, override.output_per_mtok) == (Decimal(2), Decimal(8))


def test_a_second_apply_of_a_rate_card_changes_nothing():
    config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD}))
    assert config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD})).changes == []


def test_a_rate_card_of_the_same_effective_from_is_updated_in_place():
    config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD}))
    config_apply(
        document=document(FULL_PRICE, tenant={"rate_card": {**CARD, "markup_percent": "-10"}})
    )
    assert list(RateCard.objects.values_list("markup_percent", flat=True)) == [Decimal("-10")]


def test_an_override_left_out_of_the_file_is_removed_from_its_version():
    config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD}))
    config_apply(document=document(FULL_PRICE, tenant={"rate_card": {**CARD, "models": {}}}))
    assert RateCardPrice.objects.count() == 0


def test_an_override_that_priced_billed_requests_cannot_be_removed():
    from django.utils import timezone

    from apps.keys.services import api_key_issue
    from apps.ledger.models import UsageRecord

    config_apply(document=document(FULL_PRICE, tenant={"rate_card": CARD}))
    override = RateCardPrice.objects.get()
    api_key, _secret = api_key_issue(tenant=override.rate_card.tenant, name="k")
    UsageRecord.objects.create(
        request_id="req-override",
        tenant=override.rate_card.tenant,
        api_key=api_key,
        model="rich-model",
        protocol="openai",
        status=200,
        outcome="ok",
        created_at=timezone.now(),
        rate_card=override.rate_card,
        price_rule=override,
    )
    message = refused(document(FULL_PRICE, tenant={"rate_card": {**CARD, "models": {}}}))
    assert message.startswith("tenants[0].rate_card.models.rich-model: billed requests")


def test_rate_cards_as_a_list_create_every_version():
    cards = [CARD, {"effective_from": "2026-07-01", "markup_percent": "25"}]
    config_apply(document=document(FULL_PRICE, tenant={"rate_cards": cards}))
    assert RateCard.objects.filter(tenant__name="acme").count() == 2


def test_two_rate_cards_from_the_same_time_are_refused():
    message = refused(document(FULL_PRICE, tenant={"rate_card": CARD, "rate_cards": [CARD]}))
    assert message.startswith("tenants[0].rate_cards[0].effective_from: two rate cards")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"markup_percent": 50.0}, "tenants[0].rate_card.markup_percent: must be a decimal string"),
        ({"markup_percent": "-150"}, "tenants[0].rate_card.markup_percent: a discount cannot"),
        ({"markup_percent": "NaN"}, "tenants[0].rate_card.markup_percent: must be a finite"),
        ({"markup_percent": "1.0000001"}, "tenants[0].rate_card.markup_percent: has more than"),
        ({"effective_from": None}, "tenants[0].rate_card.effective_from: is required"),
        ({"effective_from": "soon"}, "tenants[0].rate_card.effective_from: must be a date"),
        ({"discount": "5"}, "tenants[0].rate_card.discount: unknown field"),
        ({"models": ["rich-model"]}, "tenants[0].rate_card.models: must be a mapping"),
        (
            {"models": {"nope": {"input_per_mtok": "1"}}},
            "tenants[0].rate_card.models.nope: unknown model 'nope'",
        ),
        (
            {"models": {"rich-model": "1.00"}},
            "tenants[0].rate_card.models.rich-model: must be a mapping",
        ),
        (
            {"models": {"rich-model": {"input_per_mtok": "1", "effective_from": "2026-01-01"}}},
            "tenants[0].rate_card.models.rich-model.effective_from: unknown field",
        ),
        (
            {
                "models": {
                    "rich-model": {
                        "input_per_mtok": "1",
                        "tiers": [{"above_prompt_tokens": 5, "input_per_mtok": "-1"}],
                    }
                }
            },
            "tenants[0].rate_card.models.rich-model.tiers[0].input_per_mtok: must not be negative",
        ),
    ],
)
def test_a_wrong_rate_card_is_refused_naming_its_path_and_field(change, expected):
    message = refused(document(FULL_PRICE, tenant={"rate_card": {**CARD, **change}}))
    assert message.startswith(expected), message


def test_a_rate_card_that_is_not_a_mapping_is_refused():
    message = refused(document(FULL_PRICE, tenant={"rate_card": "50%"}))
    assert message.startswith("tenants[0].rate_card: must be a mapping")


# The documented examples -----------------------------------------------------------------


def test_the_example_configuration_applies():
    import yaml

    from tests.conftest import ROOT

    document_ = yaml.safe_load((ROOT / "examples" / "tollgate.yaml").read_text())
    config_apply(document=document_)
    assert RateCard.objects.filter(tenant__name="acme").count() == 1


def test_the_readmes_price_and_rate_card_example_applies():
    import re

    import yaml

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*Prices and rate cards\.\*\*.*?```yaml\n(.*?)```", readme, re.S)
    config_apply(document=yaml.safe_load(block.group(1)))
    override = RateCardPrice.objects.get(rate_card__tenant__name="acme", model__name="big-model")
    assert override.input_per_mtok == Decimal("2.5")
