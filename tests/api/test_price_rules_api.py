"""Price rules and rate cards through the management API: every field in and out, errors
keyed by the field (nested inside tiers), rate cards append-only and audited, and none of
it for a tenant's admin token."""

import pytest

from apps.audit.models import AuditEvent
from apps.billing.models import RateCard
from tests.api.api_support import token_client, user_client

PRICES = "/api/v1/staff/prices"

RULE = {
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
PRICE = {"model": "other-model", "effective_from": "2026-03-01T00:00:00Z", **RULE}


@pytest.fixture
def staff(org):
    return user_client(org.staff)


def rate_cards(org) -> str:
    return f"/api/v1/staff/tenants/{org.acme.id}/rate-cards"


# Prices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,shown",
    [
        ("input_per_mtok", "3.000000"),
        ("cached_input_per_mtok", "0.300000"),
        ("cache_write_5m_per_mtok", "3.750000"),
        ("cache_write_1h_per_mtok", "6.000000"),
        ("output_per_mtok", "15.000000"),
        ("reasoning_per_mtok", "20.000000"),
        ("request_fee", "0.001000"),
        ("byok_fee_percent", "5.000000"),
        ("byok_request_fee", "0.000100"),
        ("tiers", RULE["tiers"]),
        ("service_tiers", RULE["service_tiers"]),
    ],
)
def test_a_price_version_takes_and_returns_every_field(staff, field, shown):
    created = staff.post(PRICES, PRICE, format="json").json()
    assert staff.get(f"{PRICES}/{created['id']}").json()[field] == shown


def test_optional_rates_left_out_are_null(staff):
    created = staff.post(
        PRICES,
        {"model": "other-model", "effective_from": "2026-03-01T00:00:00Z", "input_per_mtok": "1"},
        format="json",
    )
    assert created.json()["reasoning_per_mtok"] is None


@pytest.mark.parametrize(
    "change,errors",
    [
        ({"input_per_mtok": 1.5}, {"input_per_mtok": ["must be a decimal string"]}),
        ({"output_per_mtok": True}, {"output_per_mtok": ["must be a decimal string"]}),
        ({"request_fee": "-1"}, {"request_fee": ["must not be negative"]}),
        ({"input_per_mtok": "1e400"}, {"input_per_mtok": ["is too large"]}),
        ({"input_per_mtok": "NaN"}, {"input_per_mtok": ["must be a finite number"]}),
        (
            {"cached_input_per_mtok": "0.1234567"},
            {"cached_input_per_mtok": ["has more than 6 decimal places"]},
        ),
        ({"input_per_mtok": None}, {"input_per_mtok": ["This field may not be null."]}),
        ({"tiers": {"above_prompt_tokens": 5}}, {"tiers": ["must be a list"]}),
        (
            {
                "tiers": [
                    {"above_prompt_tokens": 10},
                    {"above_prompt_tokens": 20, "input_per_mtok": "x"},
                ]
            },
            {"tiers": {"1": {"input_per_mtok": ["must be a decimal string"]}}},
        ),
        (
            {"tiers": [{"above_prompt_tokens": 10}, {"above_prompt_tokens": 10}]},
            {"tiers": ["two tiers have the same above_prompt_tokens"]},
        ),
        (
            {"tiers": [{"above_prompt_tokens": -3}]},
            {"tiers": {"0": {"above_prompt_tokens": ["must be a positive integer"]}}},
        ),
        (
            {"service_tiers": {"flex": 0.5}},
            {"service_tiers": {"flex": ["must be a decimal string"]}},
        ),
        ({"service_tiers": ["flex"]}, {"service_tiers": ["must be an object of tier: multiplier"]}),
        ({"cost_per_mtok": "1"}, {"cost_per_mtok": ["Unknown field."]}),
    ],
)
def test_a_wrong_price_field_is_a_400_naming_it(staff, change, errors):
    response = staff.post(PRICES, {**PRICE, **change}, format="json")
    assert (response.status_code, response.json()) == (400, errors)


def test_a_nul_character_in_a_price_is_a_400(staff):
    response = staff.post(PRICES, {**PRICE, "service_tiers": {"fl\x00ex": "1"}}, format="json")
    assert response.status_code == 400


# Rate cards ------------------------------------------------------------------------------

CARD = {
    "effective_from": "2026-02-01T00:00:00Z",
    "markup_percent": "50",
    "models": {"other-model": {"input_per_mtok": "2.00", "output_per_mtok": "8.00"}},
}


def test_staff_add_a_rate_card_version(org, staff):
    response = staff.post(rate_cards(org), CARD, format="json")
    assert response.status_code == 201, response.content


def test_a_rate_card_returns_its_markup(org, staff):
    created = staff.post(rate_cards(org), CARD, format="json").json()
    assert created["markup_percent"] == "50.000000"


def test_a_rate_card_returns_its_overrides_by_model(org, staff):
    created = staff.post(rate_cards(org), CARD, format="json").json()
    assert created["models"]["other-model"]["output_per_mtok"] == "8.000000"


def test_one_rate_card_is_read_back(org, staff):
    created = staff.post(rate_cards(org), CARD, format="json").json()
    read = staff.get(f"{rate_cards(org)}/{created['id']}").json()
    assert read == created


def test_the_list_holds_the_tenants_versions_oldest_first(org, staff):
    staff.post(rate_cards(org), {**CARD, "effective_from": "2026-06-01T00:00:00Z"}, format="json")
    staff.post(rate_cards(org), CARD, format="json")
    listed = staff.get(rate_cards(org)).json()
    assert [c["effective_from"] for c in listed] == ["2026-02-01T00:00:00Z", "2026-06-01T00:00:00Z"]


def test_a_rate_card_of_another_tenant_is_a_404_under_this_one(org, staff):
    created = staff.post(rate_cards(org), CARD, format="json").json()
    other = f"/api/v1/staff/tenants/{org.globex.id}/rate-cards/{created['id']}"
    assert staff.get(other).status_code == 404


def test_a_rate_card_of_an_unknown_tenant_is_a_404(staff):
    assert staff.get("/api/v1/staff/tenants/987654321/rate-cards").status_code == 404


def test_rate_cards_are_append_only(org, staff):
    staff.post(rate_cards(org), CARD, format="json")
    again = staff.post(rate_cards(org), {**CARD, "markup_percent": "10"}, format="json")
    assert (again.status_code, list(again.json())) == (400, ["effective_from"])


def test_a_rate_card_cannot_be_changed_or_deleted(org, staff):
    created = staff.post(rate_cards(org), CARD, format="json").json()
    url = f"{rate_cards(org)}/{created['id']}"
    assert staff.patch(url, {"markup_percent": "1"}, format="json").status_code == 405
    assert staff.delete(url).status_code == 405


def test_a_rate_card_is_in_the_audit_log(org, staff):
    created = staff.post(rate_cards(org), CARD, format="json").json()
    event = AuditEvent.objects.get(action="rate_card.created")
    assert (event.target_id, event.details["tenant"]) == (str(created["id"]), "acme")


def test_a_rate_card_audit_event_is_not_in_the_tenants_own_log(org, staff):
    staff.post(rate_cards(org), CARD, format="json")
    assert AuditEvent.objects.get(action="rate_card.created").tenant_id is None


@pytest.mark.parametrize(
    "change,errors",
    [
        ({"markup_percent": "-150"}, {"markup_percent": ["a discount cannot exceed 100%"]}),
        ({"markup_percent": 50.5}, {"markup_percent": ["must be a decimal string"]}),
        ({"markup_percent": "Infinity"}, {"markup_percent": ["must be a finite number"]}),
        ({"effective_from": "soon"}, None),
        ({"models": ["other-model"]}, None),
        ({"models": {"nope": {"input_per_mtok": "1"}}}, {"models": {"nope": ["unknown model"]}}),
        (
            {"models": {"other-model": {"input_per_mtok": "-1"}}},
            {"models": {"other-model": {"input_per_mtok": ["must not be negative"]}}},
        ),
        (
            {
                "models": {
                    "other-model": {
                        "input_per_mtok": "1",
                        "tiers": [{"above_prompt_tokens": 5, "output_per_mtok": "y"}],
                    }
                }
            },
            {
                "models": {
                    "other-model": {
                        "tiers": {"0": {"output_per_mtok": ["must be a decimal string"]}}
                    }
                }
            },
        ),
        (
            {"models": {"other-model": {"input_per_mtok": "1", "effective_from": "2026-01-01"}}},
            {"models": {"other-model": {"effective_from": ["Unknown field."]}}},
        ),
        ({"tenant": "globex"}, {"tenant": ["Unknown field."]}),
    ],
)
def test_a_wrong_rate_card_is_a_400_naming_the_field(org, staff, change, errors):
    response = staff.post(rate_cards(org), {**CARD, **change}, format="json")
    assert response.status_code == 400
    if errors is None:
        assert list(response.json()) == list(change)
    else:
        assert response.json() == errors


def test_a_refused_rate_card_creates_nothing(org, staff):
    staff.post(
        rate_cards(org), {**CARD, "models": {"nope": {"input_per_mtok": "1"}}}, format="json"
    )
    assert RateCard.objects.count() == 0


# Tenants' callers ------------------------------------------------------------------------


def test_a_tenant_admin_token_cannot_read_its_rate_cards(org, staff):
    staff.post(rate_cards(org), CARD, format="json")
    assert token_client(org.acme_token).get(rate_cards(org)).status_code == 403


def test_a_tenant_admin_token_cannot_read_one_rate_card(org, staff):
    created = staff.post(rate_cards(org), CARD, format="json").json()
    url = f"{rate_cards(org)}/{created['id']}"
    assert token_client(org.acme_token).get(url).status_code == 403


def test_a_tenant_admin_token_cannot_write_a_rate_card(org):
    response = token_client(org.acme_token).post(rate_cards(org), CARD, format="json")
    assert response.status_code == 403


def test_a_tenant_owner_cannot_write_a_rate_card(org):
    response = user_client(org.owner).post(rate_cards(org), CARD, format="json")
    assert response.status_code == 403


def test_a_tenant_admin_token_cannot_read_prices(org):
    assert token_client(org.acme_token).get(PRICES).status_code == 403
