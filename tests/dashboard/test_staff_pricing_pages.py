"""Staff pricing pages: the margins of a month per tenant and model (equal, to the unit, to
price − cost in the ledger), the tenants' rate cards, and every price rule field on the
models page; none of it for anyone but staff."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone

from apps.billing.models import RateCard, RateCardPrice
from apps.billing.services import rollup_sync
from apps.catalog.models import Model, Price
from apps.dashboard.templatetags.dashboard import money
from apps.ledger.models import UsageRecord
from tests.billing.billing_support import event, ingest, stream  # noqa: F401 - fixture

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def staff(client, team):
    client.force_login(team.staff)
    return client


@pytest.fixture
def priced_month(team, stream):  # noqa: F811 - the fixture
    """This month's usage of acme (a card with its own rule for other-model) and globex
    (a 50% markup), plus one record of last month."""
    RateCard.objects.create(tenant=team.globex, effective_from=EPOCH, markup_percent=50)
    acme_card = RateCard.objects.create(tenant=team.acme, effective_from=EPOCH, markup_percent=-10)
    RateCardPrice.objects.create(
        rate_card=acme_card,
        model=Model.objects.get(name="other-model"),
        input_per_mtok=Decimal("0.7"),
        output_per_mtok=Decimal("1.3"),
        request_fee=Decimal("0.000013"),
    )
    now = timezone.now().timestamp()
    mix = [
        (team.world.acme_key, "test-model", 1000, 500, 0),
        (team.world.acme_key, "test-model", 3333, 77, 1111),
        (team.world.acme_key2, "other-model", 12345, 678, 9),
        (team.world.acme_key2, "other-model", 1, 1, 0),
        (team.world.globex_key, "test-model", 777, 3, 700),
        (team.world.globex_key, "other-model", 98765, 4321, 0),
        (team.world.globex_key, "other-model", 5, 0, 0),
    ]
    events = [
        event(key, now - 60 - i, model=model, prompt=p, completion=c, cached=cached)
        for i, (key, model, p, c, cached) in enumerate(mix)
    ]
    last_month = timezone.now().replace(day=1) - timedelta(days=3)
    events.append(event(team.world.globex_key, last_month.timestamp(), prompt=10**6))
    ingest(*events)
    rollup_sync()
    return team


def ledger_lines(month_start: datetime) -> dict[tuple[str, str], dict]:
    """Independent of the rollups: the ledger's own sums for the month."""
    rows = (
        UsageRecord.objects.filter(created_at__gte=month_start)
        .values("tenant__name", "model")
        .annotate(requests=Count("id"), cost=Sum("cost"), price=Sum("price"))
    )
    return {(r["tenant__name"], r["model"]): r for r in rows}


def this_month() -> datetime:
    return timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def test_each_lines_margin_is_price_minus_cost_in_the_ledger(staff, priced_month):
    lines = staff.get(reverse("dashboard:staff-margins")).context["lines"]
    ledger = ledger_lines(this_month())
    assert {(line.tenant, line.model): line.margin for line in lines} == {
        key: row["price"] - row["cost"] for key, row in ledger.items()
    }


def test_each_lines_price_is_the_ledgers(staff, priced_month):
    lines = staff.get(reverse("dashboard:staff-margins")).context["lines"]
    ledger = ledger_lines(this_month())
    assert {(line.tenant, line.model): line.price for line in lines} == {
        key: row["price"] for key, row in ledger.items()
    }


def test_each_lines_requests_are_the_ledgers(staff, priced_month):
    lines = staff.get(reverse("dashboard:staff-margins")).context["lines"]
    ledger = ledger_lines(this_month())
    assert {(line.tenant, line.model): line.requests for line in lines} == {
        key: row["requests"] for key, row in ledger.items()
    }


def test_the_total_margin_is_the_ledgers_to_the_unit(staff, priced_month):
    page = staff.get(reverse("dashboard:staff-margins"))
    totals = UsageRecord.objects.filter(created_at__gte=this_month()).aggregate(
        price=Sum("price"), cost=Sum("cost")
    )
    assert page.context["total"].margin == totals["price"] - totals["cost"]


def test_the_page_shows_the_exact_total_margin(staff, priced_month):
    page = staff.get(reverse("dashboard:staff-margins"))
    totals = UsageRecord.objects.filter(created_at__gte=this_month()).aggregate(
        price=Sum("price"), cost=Sum("cost")
    )
    assert money(totals["price"] - totals["cost"]) in page.content.decode()


def test_a_fifty_percent_markup_is_a_third_of_the_price(staff, priced_month):
    lines = staff.get(reverse("dashboard:staff-margins")).context["lines"]
    globex = [line for line in lines if line.tenant == "globex" and line.model == "test-model"]
    assert globex[0].margin_percent == Decimal("33.3")


def test_the_page_shows_a_tenants_margin_percent(staff, priced_month):
    page = staff.get(reverse("dashboard:staff-margins")).content.decode()
    assert "33.3%" in page


def test_last_months_usage_is_on_last_months_page(staff, priced_month):
    month = (this_month() - timedelta(days=1)).strftime("%Y-%m")
    lines = staff.get(reverse("dashboard:staff-margins"), {"month": month}).context["lines"]
    assert [(line.tenant, line.requests) for line in lines] == [("globex", 1)]


def test_a_month_without_usage_shows_no_lines(staff, priced_month):
    page = staff.get(reverse("dashboard:staff-margins"), {"month": "2030-01"})
    assert page.context["lines"] == []


@pytest.mark.parametrize("month", ["2026-13", "december", "2026-1", "0000-01", "2026-01-01"])
def test_a_month_that_is_not_one_is_a_400(staff, team, month):
    assert staff.get(reverse("dashboard:staff-margins"), {"month": month}).status_code == 400


@pytest.mark.parametrize("name", ["staff-margins", "staff-rate-cards"])
@pytest.mark.parametrize("who", ["owner", "admin", "viewer", "outsider"])
def test_the_pricing_pages_are_not_for_tenant_members(client, team, name, who):
    client.force_login(getattr(team, who))
    assert client.get(reverse(f"dashboard:{name}")).status_code == 404


def test_the_pricing_pages_are_in_the_staff_nav(staff):
    page = staff.get(reverse("dashboard:staff-tenants")).content.decode()
    missing = [
        n for n in ("staff-margins", "staff-rate-cards") if reverse(f"dashboard:{n}") not in page
    ]
    assert missing == []


def test_the_pricing_pages_are_not_in_a_members_nav(client, team):
    client.force_login(team.owner)
    page = client.get(reverse("dashboard:keys")).content.decode()
    assert reverse("dashboard:staff-margins") not in page


# Rate cards ------------------------------------------------------------------------------


def test_the_rate_cards_page_shows_a_tenants_markup(staff, team):
    RateCard.objects.create(tenant=team.globex, effective_from=EPOCH, markup_percent="12.5")
    page = staff.get(reverse("dashboard:staff-rate-cards")).content.decode()
    assert "12.5%" in page


def test_the_rate_cards_page_shows_an_override_rule(staff, team):
    card = RateCard.objects.create(tenant=team.acme, effective_from=EPOCH)
    RateCardPrice.objects.create(
        rate_card=card,
        model=Model.objects.get(name="other-model"),
        input_per_mtok=Decimal("0.7"),
        output_per_mtok=Decimal("1.3"),
    )
    page = staff.get(reverse("dashboard:staff-rate-cards")).content.decode()
    assert "in $0.70 · out $1.30" in page


def test_the_rate_cards_page_marks_the_version_in_force(staff, team):
    RateCard.objects.create(tenant=team.acme, effective_from=EPOCH)
    current = RateCard.objects.create(tenant=team.acme, effective_from=EPOCH + timedelta(days=30))
    RateCard.objects.create(tenant=team.acme, effective_from=timezone.now() + timedelta(days=9))
    page = staff.get(reverse("dashboard:staff-rate-cards"))
    assert page.context["tenants"][0]["current"] == current


# Models page -----------------------------------------------------------------------------


def test_the_models_page_shows_every_part_of_a_price_rule(staff, team):
    Price.objects.create(
        model=Model.objects.get(name="other-model"),
        effective_from=EPOCH + timedelta(days=1),
        input_per_mtok=Decimal("3"),
        cached_input_per_mtok=Decimal("0.3"),
        cache_write_5m_per_mtok=Decimal("3.75"),
        cache_write_1h_per_mtok=Decimal("6"),
        output_per_mtok=Decimal("15"),
        reasoning_per_mtok=Decimal("20"),
        request_fee=Decimal("0.001"),
        tiers=[{"above_prompt_tokens": 200000, "input_per_mtok": "6", "output_per_mtok": "22.5"}],
        service_tiers={"flex": "0.5"},
        byok_fee_percent=Decimal("5"),
        byok_request_fee=Decimal("0.0001"),
    )
    page = staff.get(reverse("dashboard:staff-models")).content.decode()
    assert (
        "in $3.00 · cached $0.30 · 5m write $3.75 · 1h write $6.00 · out $15.00 · "
        "reasoning $20.00 · $0.001/request · above 200,000 prompt tokens: input $6.00, "
        "output $22.50 · service tiers flex ×0.5 · BYOK 5% + $0.0001/request"
    ) in page


def test_the_models_page_lists_every_price_version(staff, team):
    model = Model.objects.get(name="other-model")
    Price.objects.create(model=model, effective_from=EPOCH + timedelta(days=40), input_per_mtok=2)
    page = staff.get(reverse("dashboard:staff-models"))
    other = [m for m in page.context["models"] if m["model"] == model][0]
    assert len(other["prices"]) == 2
