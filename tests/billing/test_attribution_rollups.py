"""The end-user and tag day rollups: reports answered from them equal the ledger's own
sums (row by row, not the code under test) for a generated mix, with filters; the rollup
job adds each record once (re-runs, repairs, late events); a tenant's rollups hold only
its own rows; open statements refreshed from the rollups equal the ledger to the unit."""

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.billing import selectors
from apps.billing.models import EndUserDayTotal, EndUserRollup, Statement, TagRollup
from apps.billing.services import (
    reconcile_run,
    rollup_sync,
    rollup_window_recompute,
    statement_ensure,
    statement_lines_compute,
    statement_refresh,
    statements_sync,
)
from apps.ledger.models import UsageRecord
from tests.billing.billing_support import ingest
from tests.billing.test_usage_attribution import attributed, mix  # noqa: F401 (fixture)

FEB, MAR = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def world_mix(mix):  # noqa: F811 (the fixture imported above)
    """test_usage_attribution's generated mix, rolled up."""
    return mix


MEASURES = ("num_model_requests", "input_tokens", "output_tokens", "input_cached_tokens", "price")


def _value(r: UsageRecord, group: str):
    if group == "model":
        return r.model
    if group == "api_key_id":
        return r.api_key_id
    if group == "project_id":
        return r.project_id or r.api_key.project_id
    if group == "user_id":
        return r.end_user or None
    return (r.tags or {}).get(group.removeprefix("tag:"))


def _kept(r: UsageRecord, filters: dict) -> bool:
    if filters.get("api_key_ids") and r.api_key_id not in filters["api_key_ids"]:
        return False
    if filters.get("models") and r.model not in filters["models"]:
        return False
    if filters.get("project_ids") and _value(r, "project_id") not in filters["project_ids"]:
        return False
    if filters.get("user_ids") and r.end_user not in filters["user_ids"]:
        return False
    return all((r.tags or {}).get(k) in v for k, v in (filters.get("tags") or {}).items())


def ledger_report(tenant, group_by: list[str], filters: dict) -> dict:
    """Per (day, group…): the sums of the tenant's February ledger rows, in Python."""
    sums: dict = defaultdict(lambda: dict.fromkeys(MEASURES, 0))
    records = UsageRecord.objects.filter(tenant=tenant, created_at__gte=FEB, created_at__lt=MAR)
    for r in records.select_related("api_key"):
        if not _kept(r, filters):
            continue
        day = r.created_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        group = sums[(day, *(_value(r, g) for g in group_by))]
        group["num_model_requests"] += 1
        group["input_tokens"] += r.prompt_tokens
        group["output_tokens"] += r.completion_tokens
        group["input_cached_tokens"] += r.cached_tokens
        group["price"] += r.price
    return dict(sums)


def report(tenant, group_by: list[str], filters: dict) -> dict:
    out = {}
    results = selectors.usage_aggregate(
        tenant=tenant, start=FEB, end=MAR, width="1d", group_by=group_by, **filters
    )
    for bucket, rows in results.items():
        for row in rows:
            group = tuple(
                row["tags"][g.removeprefix("tag:")] if g.startswith("tag:") else row[g]
                for g in group_by
            )
            assert (bucket, *group) not in out
            out[(bucket, *group)] = {m: row[m] or 0 for m in MEASURES}
    return out


def _cases(world_mix) -> list[tuple[list[str], dict, str]]:
    web, default = world_mix.web.id, world_mix.acme_default.id
    return [
        (["user_id"], {}, "end_user_total"),
        (["user_id"], {"user_ids": ["alice"]}, "end_user_total"),
        (["project_id", "user_id"], {}, "end_user_total"),
        (["project_id", "user_id"], {"user_ids": ["alice"]}, "end_user_total"),
        (["project_id", "user_id"], {"project_ids": [web]}, "end_user_total"),
        (["project_id", "user_id", "model"], {}, "end_user"),
        (["user_id", "model"], {"models": ["test-model"]}, "end_user"),
        ([], {"user_ids": ["alice", "bob"]}, "end_user_total"),
        (["user_id"], {"project_ids": [web]}, "end_user_total"),
        (["model"], {"user_ids": ["alice"], "project_ids": [web]}, "end_user"),
        (["tag:team"], {}, "tag"),
        (["tag:team", "project_id", "api_key_id", "model"], {}, "tag"),
        ([], {"tags": {"team": ["web", "ml"]}}, "tag"),
        (["tag:team"], {"tags": {"team": ["web"]}}, "tag"),
        (
            ["tag:env", "model"],
            {"api_key_ids": [world_mix.acme_key.id], "project_ids": [default]},
            "tag",
        ),
        (["tag:team"], {"models": ["other-model"]}, "tag"),
        # Not answered by any rollup: the ledger.
        (["user_id", "tag:team"], {}, "ledger"),
        (["user_id"], {"api_key_ids": [world_mix.acme_key2.id]}, "ledger"),
        ([], {"tags": {"team": ["web"], "env": ["prod"]}}, "ledger"),
    ]


@pytest.mark.parametrize("case", range(19))
def test_reports_from_the_rollups_equal_the_ledger(world_mix, case):
    group_by, filters, source = _cases(world_mix)[case]
    assert selectors.usage_source(width="1d", group_by=group_by, **filters) == source
    assert report(world_mix.acme, group_by, filters) == ledger_report(
        world_mix.acme, group_by, filters
    )


def _rollup_rows() -> tuple[list, list, list]:
    totals = list(
        EndUserDayTotal.objects.order_by(
            "tenant_id", "bucket_start", "project_id", "end_user"
        ).values_list("tenant_id", "bucket_start", "project_id", "end_user", "requests", "price")
    )
    users = list(
        EndUserRollup.objects.order_by(
            "tenant_id", "bucket_start", "project_id", "end_user", "model"
        ).values_list(
            "tenant_id", "bucket_start", "project_id", "end_user", "model", "requests", "price"
        )
    )
    tags = list(
        TagRollup.objects.order_by(
            "tenant_id", "bucket_start", "tag_key", "tag_value", "project_id", "api_key_id", "model"
        ).values_list(
            "tenant_id",
            "bucket_start",
            "tag_key",
            "tag_value",
            "project_id",
            "api_key_id",
            "model",
            "requests",
            "price",
        )
    )
    return totals, users, tags


def test_a_rerun_adds_nothing(world_mix):
    before = _rollup_rows()
    rollup_sync()
    assert _rollup_rows() == before


def test_a_repair_rebuilds_the_same_rows(world_mix):
    before = _rollup_rows()
    rollup_window_recompute(start=FEB, end=MAR)
    assert _rollup_rows() == before


@pytest.mark.parametrize("rollup", [EndUserRollup, EndUserDayTotal])
def test_a_late_event_is_added_once_to_its_day(world_mix, rollup):
    late = attributed(
        world_mix.acme_key,
        "2026-02-02 03:04:05",
        project=world_mix.web,
        user="late-user",
        tags={"team": "x"},
    )
    ingest(late)
    rollup_sync()
    rollup_sync()
    rows = rollup.objects.filter(tenant=world_mix.acme, end_user="late-user")
    assert list(rows.values_list("bucket_start", "requests")) == [
        (datetime(2026, 2, 2, tzinfo=UTC), 1)
    ]


def test_a_late_event_shows_in_the_reports(world_mix):
    ingest(
        attributed(
            world_mix.acme_key,
            "2026-02-02 03:04:05",
            project=world_mix.web,
            user="alice",
            tags={"team": "web"},
        )
    )
    rollup_sync()
    for group_by in (["user_id"], ["tag:team"]):
        assert report(world_mix.acme, group_by, {}) == ledger_report(world_mix.acme, group_by, {})


def test_a_tenants_rollups_hold_only_its_own_rows(world_mix):
    """globex has the same end-user name and tag value as acme."""
    theirs = EndUserRollup.objects.filter(end_user="alice", tenant=world_mix.globex)
    assert sum(theirs.values_list("requests", flat=True)) == 5


def test_a_tenants_report_shows_only_its_own_end_users(world_mix):
    assert report(world_mix.globex, ["user_id"], {}) == ledger_report(
        world_mix.globex, ["user_id"], {}
    )


def test_a_tenants_tag_report_shows_only_its_own_rows(world_mix):
    got = report(world_mix.globex, [], {"tags": {"team": ["web"]}})
    assert sum(v["num_model_requests"] for v in got.values()) == 5


# Open statements from the rollups ---------------------------------------------------------


def _lines(lines) -> list[tuple]:
    return [
        (
            line.kind,
            line.usage_period,
            line.model,
            line.requests,
            line.prompt_tokens,
            line.completion_tokens,
            line.cached_tokens,
            Decimal(line.amount),
        )
        for line in lines
    ]


def test_an_open_statement_from_the_rollups_equals_the_ledger(world_mix):
    statement = statement_refresh(
        statement=statement_ensure(tenant=world_mix.acme, month=FEB.date())
    )
    from_ledger = statement_lines_compute(
        statement=statement, high_water=statement.ledger_high_water
    )
    assert _lines(statement.lines.all()) == _lines(from_ledger)


def test_an_open_statements_total_is_the_ledgers(world_mix):
    statement = statement_refresh(
        statement=statement_ensure(tenant=world_mix.acme, month=FEB.date())
    )
    records = UsageRecord.objects.filter(
        tenant=world_mix.acme, created_at__gte=FEB, created_at__lt=MAR
    )
    assert statement.total == sum(r.price for r in records)


def test_statements_sync_refreshes_with_events_not_yet_rolled_up(world_mix):
    ingest(
        attributed(
            world_mix.acme_key, "2026-02-20 10:00:00", project=world_mix.web, user="", tags=None
        )
    )
    statements_sync(now=datetime(2026, 2, 25, tzinfo=UTC))
    statement = Statement.objects.get(tenant=world_mix.acme, period_start=FEB.date())
    records = UsageRecord.objects.filter(
        tenant=world_mix.acme, created_at__gte=FEB, created_at__lt=MAR
    )
    assert statement.total == sum(r.price for r in records)


def test_reconciliation_compares_the_end_user_rollups(world_mix):
    EndUserRollup.objects.filter(tenant=world_mix.acme, end_user="alice").update(requests=0)
    run = reconcile_run(window_start=FEB, window_end=MAR)
    assert {d["check"] for d in run.differences} == {"end_user_rollups"}


def test_reconciliation_compares_the_end_user_day_totals(world_mix):
    EndUserDayTotal.objects.filter(tenant=world_mix.acme, end_user="alice").update(requests=0)
    run = reconcile_run(window_start=FEB, window_end=MAR)
    assert {d["check"] for d in run.differences} == {"end_user_day_totals"}


def test_reconciliation_compares_the_tag_rollups(world_mix):
    TagRollup.objects.filter(tenant=world_mix.acme, tag_value="web").update(requests=0)
    run = reconcile_run(window_start=FEB, window_end=MAR)
    assert {d["check"] for d in run.differences} == {"tag_rollups"}


def test_reconciliation_finds_the_rollups_equal_to_the_ledger(world_mix):
    run = reconcile_run(window_start=FEB, window_end=MAR)
    assert run.differences == []
