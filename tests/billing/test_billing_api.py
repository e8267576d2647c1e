"""The management API's reports: OpenAI's usage/costs shapes and CSV exports, every
figure equal to the ledger, and never another tenant's data."""

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from apps.billing.models import Statement
from apps.billing.services import rollup_sync, statements_sync
from apps.ledger.models import UsageRecord
from apps.tenants.models import AdminToken
from apps.tenants.services import admin_token_revoke
from tests.billing.billing_support import event, ingest, ts

FEB = int(ts("2026-02-01 00:00"))
MAR = int(ts("2026-03-01 00:00"))


def api(token: str | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def body(response) -> dict:
    return json.loads(response.content, parse_float=Decimal)


@pytest.fixture
def usage(world):
    events = [
        event(world.acme_key, "2026-02-10 09:00:01", prompt=100, completion=10),
        event(world.acme_key, "2026-02-10 09:00:59", prompt=200, completion=20, cached=50),
        event(world.acme_key, "2026-02-10 10:15:00", prompt=333, completion=7, status=500),
        event(world.acme_key2, "2026-02-11 10:30:00", model="other-model", prompt=7, completion=3),
        event(world.acme_key, "2026-02-20 23:59:59", prompt=1_000_001, completion=999_999),
        event(world.globex_key, "2026-02-10 09:30:00", prompt=5000, completion=5000),
        event(world.globex_key, "2026-02-11 09:30:00", model="other-model", prompt=1, completion=1),
    ]
    ingest(*events)
    rollup_sync()
    statements_sync(now=datetime(2026, 3, 2, tzinfo=UTC))
    return world


def ledger(tenant, **filters) -> dict:
    records = UsageRecord.objects.filter(tenant=tenant, **filters)
    return {
        "requests": records.count(),
        "input": sum(r.prompt_tokens for r in records),
        "output": sum(r.completion_tokens for r in records),
        "cached": sum(r.cached_tokens for r in records),
        "cost": sum((r.cost for r in records), Decimal(0)),
    }


def results(page: dict) -> list[dict]:
    return [r for bucket in page["data"] for r in bucket["results"]]


def test_usage_completions_has_openai_shape_and_ledger_numbers(usage):
    response = api(usage.acme_token).get(
        "/api/v1/organization/usage/completions",
        {"start_time": FEB, "end_time": MAR, "limit": 31},
    )
    assert response.status_code == 200, response.content
    page = body(response)
    assert page["object"] == "page" and page["has_more"] is False and page["next_page"] is None
    assert len(page["data"]) == 28
    first = page["data"][0]
    assert first["object"] == "bucket"
    assert (first["start_time"], first["end_time"]) == (FEB, FEB + 86400)
    assert first["results"] == []
    rows = results(page)
    assert all(r["object"] == "organization.usage.completions.result" for r in rows)
    assert all(r["model"] is None and r["api_key_id"] is None for r in rows)
    want = ledger(usage.acme)
    assert sum(r["num_model_requests"] for r in rows) == want["requests"] == 5
    assert sum(r["input_tokens"] for r in rows) == want["input"]
    assert sum(r["output_tokens"] for r in rows) == want["output"]
    assert sum(r["input_cached_tokens"] for r in rows) == want["cached"]


def test_usage_grouped_by_model_and_key_in_hour_and_minute_buckets(usage):
    client = api(usage.acme_token)
    for width in ("1h", "1m"):
        page = body(
            client.get(
                "/api/v1/organization/usage/completions",
                {
                    "start_time": int(ts("2026-02-10 09:00")),
                    "end_time": int(ts("2026-02-10 11:00")),
                    "bucket_width": width,
                    "group_by": ["model", "api_key_id"],
                    "limit": 120,
                },
            )
        )
        nonempty = [b for b in page["data"] if b["results"]]
        expected = 2 if width == "1h" else 2  # 09:00 (two records in one minute), 10:15
        assert len(nonempty) == expected
        first = nonempty[0]["results"][0]
        assert first["model"] == "test-model" and first["api_key_id"] == str(usage.acme_key.id)
        assert first["num_model_requests"] == 2 and first["input_tokens"] == 300
        assert first["input_cached_tokens"] == 50


def test_pagination_walks_every_bucket_once(usage):
    client, seen, params = api(usage.acme_token), [], {"start_time": FEB, "end_time": MAR}
    while True:
        page = body(client.get("/api/v1/organization/usage/completions", {**params, "limit": 10}))
        seen += [b["start_time"] for b in page["data"]]
        if not page["has_more"]:
            break
        params["page"] = page["next_page"]
    assert seen == list(range(FEB, MAR, 86400))


def test_costs_equal_the_ledger_exactly(usage):
    page = body(
        api(usage.acme_token).get(
            "/api/v1/organization/costs",
            {"start_time": FEB, "end_time": MAR, "limit": 31, "group_by": "line_item"},
        )
    )
    rows = results(page)
    assert all(r["object"] == "organization.costs.result" for r in rows)
    assert all(r["amount"]["currency"] == "usd" and r["project_id"] is None for r in rows)
    by_model: dict[str, Decimal] = {}
    for r in rows:
        by_model[r["line_item"]] = by_model.get(r["line_item"], Decimal(0)) + r["amount"]["value"]
    assert by_model == {
        "test-model": ledger(usage.acme, model="test-model")["cost"],
        "other-model": ledger(usage.acme, model="other-model")["cost"],
    }
    # The big record's cost survives JSON with every digit.
    assert Decimal("2.999999") in {r["amount"]["value"] for r in rows}
    statement = Statement.objects.get(tenant=usage.acme, period_start="2026-02-01")
    assert sum(by_model.values()) == statement.total


def test_records_csv_equals_the_ledger(usage):
    response = api(usage.acme_token).get(
        "/api/v1/usage/records.csv", {"start_time": FEB, "end_time": MAR}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv") and response.streaming
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    records = UsageRecord.objects.filter(tenant=usage.acme).order_by("created_at", "id")
    assert [r["request_id"] for r in rows] == [r.request_id for r in records]
    assert [Decimal(r["cost"]) for r in rows] == [r.cost for r in records]
    assert sum(int(r["prompt_tokens"]) for r in rows) == ledger(usage.acme)["input"]


def test_records_csv_shows_every_token_class_of_a_record(world):
    record = replace(
        event(world.acme_key, "2026-02-10 09:00:01", prompt=100, completion=10),
        cache_write_5m_tokens=6,
        cache_write_1h_tokens=4,
        reasoning_tokens=3,
        service_tier="priority",
    )
    ingest(record)
    response = api(world.acme_token).get(
        "/api/v1/usage/records.csv", {"start_time": FEB, "end_time": MAR}
    )
    (row,) = csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode()))
    shown = {name: row[name] for name in CLASSES}
    assert shown == {
        "cache_write_5m_tokens": "6",
        "cache_write_1h_tokens": "4",
        "reasoning_tokens": "3",
        "service_tier": "priority",
    }


CLASSES = ("cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens", "service_tier")


def test_records_csv_shows_whether_the_callers_own_key_served_a_record(world):
    ingest(replace(event(world.acme_key, "2026-02-10 09:00:01", prompt=100), byok=True))
    ingest(event(world.acme_key, "2026-02-10 09:00:02", prompt=100))
    response = api(world.acme_token).get(
        "/api/v1/usage/records.csv", {"start_time": FEB, "end_time": MAR}
    )
    rows = csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode()))
    assert [row["byok"] for row in rows] == ["True", "False"]  # as the stream column


def test_rollups_csv_equals_the_ledger(usage):
    for granularity in ("hour", "day"):
        response = api(usage.acme_token).get(
            "/api/v1/usage/rollups.csv",
            {"start_time": FEB, "end_time": MAR, "granularity": granularity},
        )
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        want = ledger(usage.acme)
        assert sum(int(r["requests"]) for r in rows) == want["requests"]
        assert sum(int(r["errors"]) for r in rows) == 1
        assert sum(int(r["completion_tokens"]) for r in rows) == want["output"]
        assert sum(Decimal(r["cost"]) for r in rows) == want["cost"]


def test_statements_list_and_detail(usage):
    client = api(usage.acme_token)
    listed = body(client.get("/api/v1/statements"))["data"]
    assert [s["period_start"] for s in listed] == ["2026-03-01", "2026-02-01"]
    feb = body(client.get(f"/api/v1/statements/{listed[1]['id']}"))
    assert feb["status"] == "closed"
    assert sum(line["amount"] for line in feb["lines"]) == feb["total"]
    assert feb["total"] == ledger(usage.acme)["cost"]


ROUTES = [
    ("/api/v1/organization/usage/completions", {"start_time": FEB, "end_time": MAR, "limit": 28}),
    ("/api/v1/organization/costs", {"start_time": FEB, "end_time": MAR, "limit": 28}),
    ("/api/v1/usage/records.csv", {"start_time": FEB, "end_time": MAR}),
    ("/api/v1/usage/rollups.csv", {"start_time": FEB, "end_time": MAR}),
    ("/api/v1/statements", {}),
]


@pytest.mark.parametrize(("path", "params"), ROUTES)
def test_a_tenant_cannot_name_another_tenant_on_any_route(usage, path, params):
    client = api(usage.acme_token)
    assert client.get(path, {**params, "tenant": "acme"}).status_code == 200
    assert client.get(path, {**params, "tenant": "globex"}).status_code == 404
    assert client.get(path, {**params, "tenant": "nope"}).status_code == 404


@pytest.mark.parametrize(
    "path", ["/api/v1/organization/usage/completions", "/api/v1/organization/costs"]
)
def test_another_tenants_key_is_a_404(usage, path):
    response = api(usage.acme_token).get(
        path, {"start_time": FEB, "end_time": MAR, "api_key_ids": [usage.globex_key.id]}
    )
    assert response.status_code == 404


def test_another_tenants_statement_is_a_404(usage):
    globex_feb = Statement.objects.get(tenant=usage.globex, period_start="2026-02-01")
    assert api(usage.acme_token).get(f"/api/v1/statements/{globex_feb.id}").status_code == 404
    assert api(usage.globex_token).get(f"/api/v1/statements/{globex_feb.id}").status_code == 200


@pytest.mark.parametrize(("path", "params"), ROUTES)
def test_each_tenant_sees_only_its_own_numbers(usage, path, params):
    acme = api(usage.acme_token).get(path, params)
    globex = api(usage.globex_token).get(path, params)
    assert acme.status_code == globex.status_code == 200
    acme_text = b"".join(acme.streaming_content) if acme.streaming else acme.content
    globex_text = b"".join(globex.streaming_content) if globex.streaming else globex.content
    for request_id in UsageRecord.objects.filter(tenant=usage.globex).values_list(
        "request_id", flat=True
    ):
        assert request_id.encode() not in acme_text
    if path.endswith(".csv"):
        key_ids = {row["api_key_id"] for row in csv.DictReader(io.StringIO(acme_text.decode()))}
        assert key_ids <= {str(usage.acme_key.id), str(usage.acme_key2.id)}
    assert acme_text != globex_text


@pytest.mark.parametrize(("path", "params"), ROUTES)
def test_callers_without_a_valid_admin_token_are_refused(usage, path, params):
    assert api().get(path, params).status_code == 401
    assert api("tga-not-a-real-token").get(path, params).status_code == 401
    # An inference key is not a management credential.
    secret_less = api(usage.acme_key.prefix + "x" * 40).get(path, params)
    assert secret_less.status_code == 401
    token = AdminToken.objects.get(tenant=usage.acme, name="ops")
    admin_token_revoke(admin_token=token)
    assert api(usage.acme_token).get(path, params).status_code == 401


def test_staff_name_any_tenant_members_see_theirs(usage):
    staff = User.objects.create_user("op", password="pw", is_staff=True)
    client = APIClient()
    client.force_login(staff)
    params = {"start_time": FEB, "end_time": MAR, "limit": 31}
    assert client.get("/api/v1/organization/costs", params).status_code == 400
    page = body(client.get("/api/v1/organization/costs", {**params, "tenant": "globex"}))
    assert sum(r["amount"]["value"] for r in results(page)) == ledger(usage.globex)["cost"]
    member = User.objects.create_user("m", password="pw")
    usage.acme.memberships.create(user=member, role="viewer")
    client.force_login(member)
    assert client.get("/api/v1/organization/costs", params).status_code == 200
    assert (
        client.get("/api/v1/organization/costs", {**params, "tenant": "globex"}).status_code == 404
    )


def test_bad_parameters_are_400(usage):
    client = api(usage.acme_token)
    path = "/api/v1/organization/usage/completions"
    assert client.get(path).status_code == 400
    assert client.get(path, {"start_time": "x"}).status_code == 400
    assert client.get(path, {"start_time": FEB, "bucket_width": "1w"}).status_code == 400
    assert client.get(path, {"start_time": FEB, "limit": 32}).status_code == 400
    assert client.get(path, {"start_time": FEB, "group_by": "colour"}).status_code == 400
    assert client.get(path, {"start_time": FEB, "page": "garbage"}).status_code == 400
