"""Reports by project, end user, key, model and tag: the usage and costs API equal to the
ledger's own sums for a generated mix, read by the official openai SDK, filtered, never
showing another tenant's projects or end users; hostile end users neutralised in CSV and
HTML."""

import csv
import io
import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from rest_framework.test import APIClient

from apps.billing.models import UsageRollup
from apps.billing.services import reconcile_run, rollup_sync
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.projects.models import Project
from apps.tenants.models import Membership
from tests.billing.billing_support import event, ingest, ts

FEB = int(ts("2026-02-01 00:00"))
MAR = int(ts("2026-03-01 00:00"))
END_USERS = ["", "alice", "bob", "carol,with,commas", "dave"]
TEAMS = ["web", "batch", "ml"]
HOSTILE_USER = "=cmd|' /C calc'!A0<script>alert(1)</script>"
PATH = "/api/v1/organization/usage/completions"
COSTS = "/api/v1/organization/costs"


def api(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def body(response) -> dict:
    assert response.status_code == 200, response.content
    return json.loads(response.content, parse_float=Decimal)


def results(page: dict) -> list[dict]:
    return [r for bucket in page["data"] for r in bucket["results"]]


def attributed(key: ApiKey, when: str, *, project: Project | None, user: str, tags, **kw):
    e = event(key, when, **kw)
    e.project_id = None if project is None else project.id
    e.end_user = user
    e.tags = tags
    return e


@pytest.fixture
def mix(world):
    """A seeded mix over February: acme's two projects, two keys, two models, five end
    users (one none), three teams (and untagged); a legacy row without a project; globex
    with its own project and the same end-user names."""
    acme_default = Project.objects.get(tenant=world.acme, is_default=True)
    web = Project.objects.create(tenant=world.acme, name="web")
    globex_project = Project.objects.get(tenant=world.globex, is_default=True)
    rng = random.Random(16)
    events = []
    for _ in range(240):
        day, hour, minute = rng.randint(1, 27), rng.randint(0, 23), rng.randint(0, 59)
        key = rng.choice([world.acme_key, world.acme_key2])
        team = rng.choice([*TEAMS, None])
        events.append(
            attributed(
                key,
                f"2026-02-{day:02d} {hour:02d}:{minute:02d}:{rng.randint(0, 59):02d}",
                project=rng.choice([acme_default, web]),
                user=rng.choice(END_USERS),
                tags=None if team is None else {"team": team, "env": rng.choice(["prod", "dev"])},
                model=rng.choice(["test-model", "other-model"]),
                prompt=rng.randint(1, 5000),
                completion=rng.randint(1, 900),
                cached=rng.choice([0, 0, 7]),
            )
        )
    legacy = attributed(
        world.acme_key, "2026-02-03 04:05:06", project=None, user="", tags=None, prompt=11
    )
    hostile = attributed(
        world.acme_key, "2026-02-04 10:00:00", project=web, user=HOSTILE_USER, tags=None
    )
    theirs = [
        attributed(
            world.globex_key,
            f"2026-02-0{d} 12:00:00",
            project=globex_project,
            user="alice",
            tags={"team": "web"},
        )
        for d in range(1, 6)
    ]
    ingest(*events, legacy, hostile, *theirs)
    rollup_sync()
    world.web = web
    world.acme_default = acme_default
    world.globex_project = globex_project
    return world


def ledger_sums(tenant, key) -> dict:
    """The ledger's own sums per (day, group), read row by row (not the code under test)."""
    sums: dict = defaultdict(lambda: defaultdict(Decimal))
    for r in UsageRecord.objects.filter(tenant=tenant).select_related("api_key"):
        group = (int(r.created_at.replace(hour=0, minute=0, second=0).timestamp()), *key(r))
        sums[group]["num_model_requests"] += 1
        sums[group]["input_tokens"] += r.prompt_tokens
        sums[group]["output_tokens"] += r.completion_tokens
        sums[group]["input_cached_tokens"] += r.cached_tokens
        sums[group]["price"] += r.price
    return {group: dict(values) for group, values in sums.items()}


def project_of(r: UsageRecord) -> str:
    return str(r.project_id or r.api_key.project_id)


def reported(page: dict, *fields: str) -> dict:
    out = {}
    for bucket in page["data"]:
        for r in bucket["results"]:
            group = (bucket["start_time"], *(r[f] for f in fields))
            assert group not in out
            out[group] = {
                k: r[k]
                for k in (
                    "num_model_requests",
                    "input_tokens",
                    "output_tokens",
                    "input_cached_tokens",
                )
            }
    return out


def without_price(sums: dict) -> dict:
    return {g: {k: v for k, v in s.items() if k != "price"} for g, s in sums.items()}


# Exact sums --------------------------------------------------------------------------------


def test_group_by_project_and_user_equals_the_ledger(mix):
    page = body(
        api(mix.acme_token).get(
            PATH,
            {"start_time": FEB, "end_time": MAR, "limit": 31, "group_by": "project_id,user_id"},
        )
    )
    want = ledger_sums(mix.acme, lambda r: (project_of(r), r.end_user or None))
    assert reported(page, "project_id", "user_id") == without_price(want)


def test_costs_by_project_and_user_equal_the_ledger_to_the_unit(mix):
    page = body(
        api(mix.acme_token).get(
            COSTS,
            {"start_time": FEB, "end_time": MAR, "limit": 31, "group_by": "project_id,user_id"},
        )
    )
    got = {
        (b["start_time"], r["project_id"], r["user_id"]): r["amount"]["value"]
        for b in page["data"]
        for r in b["results"]
    }
    want = ledger_sums(mix.acme, lambda r: (project_of(r), r.end_user or None))
    assert got == {group: sums["price"] for group, sums in want.items()}


def test_group_by_project_key_and_model_in_hours_reads_the_rollups_and_equals_the_ledger(mix):
    page = body(
        api(mix.acme_token).get(
            PATH,
            {
                "start_time": FEB,
                "end_time": FEB + 7 * 86400,
                "bucket_width": "1h",
                "limit": 168,
                "group_by": ["project_id", "api_key_id", "model"],
            },
        )
    )
    sums: dict = defaultdict(int)
    for r in UsageRecord.objects.filter(
        tenant=mix.acme, created_at__lt=datetime(2026, 2, 8, tzinfo=UTC)
    ):
        hour = int(r.created_at.replace(minute=0, second=0).timestamp())
        sums[(hour, project_of(r), str(r.api_key_id), r.model)] += r.prompt_tokens
    got = {
        g: v["input_tokens"] for g, v in reported(page, "project_id", "api_key_id", "model").items()
    }
    assert got == dict(sums)


def test_a_record_from_before_projects_counts_in_its_keys_project(mix):
    page = body(
        api(mix.acme_token).get(
            PATH,
            {
                "start_time": int(ts("2026-02-03 00:00")),
                "end_time": int(ts("2026-02-04 00:00")),
                "group_by": "project_id",
                "project_ids": str(mix.acme_key.project_id),
            },
        )
    )
    want = sum(
        r.prompt_tokens
        for r in UsageRecord.objects.filter(
            tenant=mix.acme, created_at__lt=datetime(2026, 2, 4, tzinfo=UTC)
        )
        .filter(created_at__gte=datetime(2026, 2, 3, tzinfo=UTC))
        .select_related("api_key")
        if project_of(r) == str(mix.acme_key.project_id)
    )
    assert sum(r["input_tokens"] for r in results(page)) == want


def test_group_by_tag_equals_the_ledger(mix):
    page = body(
        api(mix.acme_token).get(
            PATH, {"start_time": FEB, "end_time": MAR, "limit": 31, "group_by": "tag:team"}
        )
    )
    got: dict = defaultdict(int)
    for r in results(page):
        got[r["tags"]["team"]] += r["num_model_requests"]
    want: dict = defaultdict(int)
    for r in UsageRecord.objects.filter(tenant=mix.acme):
        want[(r.tags or {}).get("team")] += 1
    assert dict(got) == dict(want)


def test_results_not_grouped_by_project_or_user_carry_nulls(mix):
    rows = results(
        body(
            api(mix.acme_token).get(
                PATH, {"start_time": FEB, "end_time": MAR, "limit": 31, "group_by": "model"}
            )
        )
    )
    assert {(r["project_id"], r["user_id"], r["tags"]) for r in rows} == {(None, None, None)}


# Filters -----------------------------------------------------------------------------------


def _total(page: dict, field: str = "num_model_requests") -> int:
    return sum(r[field] for r in results(page))


def test_project_ids_filter(mix):
    page = body(
        api(mix.acme_token).get(
            PATH, {"start_time": FEB, "end_time": MAR, "limit": 31, "project_ids": mix.web.id}
        )
    )
    assert _total(page) == UsageRecord.objects.filter(project=mix.web).count()


def test_user_ids_filter_takes_each_value_whole(mix):
    page = body(
        api(mix.acme_token).get(
            PATH,
            {
                "start_time": FEB,
                "end_time": MAR,
                "limit": 31,
                "user_ids[]": ["carol,with,commas", "bob"],
            },
        )
    )
    want = UsageRecord.objects.filter(
        tenant=mix.acme, end_user__in=["carol,with,commas", "bob"]
    ).count()
    assert _total(page) == want


def test_tags_filter_or_within_a_key_and_across_keys(mix):
    page = body(
        api(mix.acme_token).get(
            PATH,
            {
                "start_time": FEB,
                "end_time": MAR,
                "limit": 31,
                "tags": "team:web,team:ml,env:prod",
            },
        )
    )
    want = sum(
        1
        for r in UsageRecord.objects.filter(tenant=mix.acme)
        if (r.tags or {}).get("team") in ("web", "ml") and (r.tags or {}).get("env") == "prod"
    )
    assert _total(page) == want


def test_filters_combine_with_models_and_keys(mix):
    page = body(
        api(mix.acme_token).get(
            PATH,
            {
                "start_time": FEB,
                "end_time": MAR,
                "limit": 31,
                "models": "other-model",
                "api_key_ids": mix.acme_key2.id,
                "user_ids": "alice",
                "project_ids": mix.web.id,
            },
        )
    )
    want = UsageRecord.objects.filter(
        model="other-model", api_key=mix.acme_key2, end_user="alice", project=mix.web
    ).count()
    assert _total(page) == want


# Isolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PATH, COSTS])
def test_another_tenants_project_is_a_404(mix, path):
    response = api(mix.acme_token).get(
        path, {"start_time": FEB, "end_time": MAR, "project_ids": mix.globex_project.id}
    )
    assert response.status_code == 404


def test_a_project_that_does_not_exist_is_a_404(mix):
    response = api(mix.acme_token).get(
        PATH, {"start_time": FEB, "end_time": MAR, "project_ids": 987654}
    )
    assert response.status_code == 404


def test_another_tenants_end_user_gives_only_this_tenants_rows(mix):
    page = body(
        api(mix.globex_token).get(
            PATH,
            {"start_time": FEB, "end_time": MAR, "limit": 31, "group_by": "user_id,project_id"},
        )
    )
    rows = results(page)
    assert {(r["user_id"], r["project_id"]) for r in rows} == {
        ("alice", str(mix.globex_project.id))
    }
    assert _total(page) == 5


@pytest.mark.parametrize(
    "params, field",
    [
        ({"project_ids": "proj_x"}, "project_ids"),
        ({"user_ids": "a\x00b"}, "user_ids"),
        ({"user_ids": "u" * 300}, "user_ids"),
        ({"tags": "team"}, "tags"),
        ({"tags": "team:=cmd|x"}, "tags"),
        ({"group_by": "tag:bad key"}, "group_by"),
        ({"group_by": "tenant"}, "group_by"),
    ],
)
def test_bad_filters_are_a_400_naming_the_parameter(mix, params, field):
    response = api(mix.acme_token).get(PATH, {"start_time": FEB, "end_time": MAR, **params})
    assert response.status_code == 400
    assert field in json.loads(response.content)


# The official SDK --------------------------------------------------------------------------


def test_the_openai_sdk_parses_the_grouped_usage_and_costs(mix):
    django_client = APIClient()

    def through_django(request: httpx.Request) -> httpx.Response:
        """The SDK's request, served in-process by Django's test client (same DB
        transaction as the test)."""
        response = django_client.generic(
            request.method,
            request.url.raw_path.decode(),
            HTTP_AUTHORIZATION=request.headers["authorization"],
        )
        return httpx.Response(
            response.status_code,
            headers={"content-type": response["Content-Type"]},
            content=response.content,
        )

    transport = httpx.MockTransport(through_django)
    client = openai.OpenAI(
        base_url="http://testserver/api/v1",
        api_key="unused",
        admin_api_key=mix.acme_token,
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    usage = client.admin.organization.usage.completions(
        start_time=FEB,
        end_time=MAR,
        limit=31,
        group_by=["project_id", "user_id"],
        project_ids=[str(mix.web.id)],
    )
    parsed = [r for bucket in usage.data for r in bucket.results]
    assert {r.project_id for r in parsed} == {str(mix.web.id)}
    assert (
        sum(r.num_model_requests for r in parsed)
        == UsageRecord.objects.filter(project=mix.web).count()
    )
    assert "alice" in {r.user_id for r in parsed}
    costs = client.admin.organization.usage.costs(
        start_time=FEB, end_time=MAR, limit=31, group_by=["project_id", "line_item"]
    )
    lines = [r for bucket in costs.data for r in bucket.results]
    assert {r.project_id for r in lines} == {str(mix.web.id), str(mix.acme_default.id)}


# Hostile values ----------------------------------------------------------------------------


def test_records_csv_neutralises_a_formula_end_user(mix):
    response = api(mix.acme_token).get(
        "/api/v1/usage/records.csv",
        {"start_time": int(ts("2026-02-04 10:00")), "end_time": int(ts("2026-02-04 10:01"))},
    )
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    hostile = [r for r in rows if HOSTILE_USER in r["end_user"]]
    assert hostile[0]["end_user"] == "'" + HOSTILE_USER


def test_rollups_csv_carries_the_project(mix):
    response = api(mix.acme_token).get(
        "/api/v1/usage/rollups.csv", {"start_time": FEB, "end_time": MAR, "granularity": "day"}
    )
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {r["project_id"] for r in rows} == {str(mix.web.id), str(mix.acme_default.id)}


def test_an_end_user_refused_at_ingest_never_reaches_the_ledger(world):
    e = attributed(
        world.acme_key, "2026-02-05 00:00:00", project=None, user="x" * 10_000, tags=None
    )
    bad_tags = attributed(
        world.acme_key, "2026-02-05 00:00:01", project=None, user="", tags={"a": "=cmd|x"}
    )
    ingest(e, bad_tags)
    assert set(UsageRecord.objects.values_list("end_user", "tags")) == {("", None)}


@pytest.fixture
def owner(mix, client):
    user = User.objects.create_user("owner@example.com", password="pw-123456789")
    Membership.objects.create(tenant=mix.acme, user=user, role=Membership.Role.OWNER)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "group, params, label",
    [
        ("project", {}, "web (#"),
        ("user", {}, "carol,with,commas"),
        ("tag", {"tag": "team"}, "batch"),
        ("key", {}, "(#"),
        ("model", {}, "other-model"),
    ],
)
def test_dashboard_usage_splits(owner, group, params, label):
    response = owner.get(
        reverse("dashboard:usage"),
        {"start": "2026-02-01", "end": "2026-02-28", "group": group, **params},
    )
    assert response.status_code == 200
    table = response.content.decode().split('data-testid="usage-totals"')[1]
    assert label in table.split("</table>")[0]


def test_dashboard_escapes_a_hostile_end_user(owner):
    response = owner.get(
        reverse("dashboard:usage"), {"start": "2026-02-01", "end": "2026-02-28", "group": "user"}
    )
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_dashboard_tag_split_needs_a_valid_key(owner):
    response = owner.get(reverse("dashboard:usage"), {"group": "tag", "tag": "<b>"})
    assert response.status_code == 200
    assert "<b>" not in response.content.decode().split('data-testid="usage-range"')[1][:2000]


def test_months_sum_ignores_nothing(mix):
    """Every February row of acme is in some group_by=user_id result (none lost to NULLs)."""
    page = body(
        api(mix.acme_token).get(
            PATH, {"start_time": FEB, "end_time": MAR, "limit": 31, "group_by": "user_id"}
        )
    )
    assert (
        _total(page)
        == UsageRecord.objects.filter(
            tenant=mix.acme, created_at__gte=datetime(2026, 2, 1, tzinfo=UTC)
        ).count()
    )


def test_one_key_in_two_projects_in_an_hour_rolls_up_and_reconciles(world):
    web = Project.objects.create(tenant=world.acme, name="web")
    default = Project.objects.get(tenant=world.acme, is_default=True)
    ingest(
        attributed(world.acme_key, "2026-02-06 10:01:00", project=default, user="", tags=None),
        attributed(world.acme_key, "2026-02-06 10:59:00", project=web, user="", tags=None),
    )
    rollup_sync()
    hours = UsageRollup.objects.filter(tenant=world.acme, granularity="hour")
    assert sorted(hours.values_list("project_id", flat=True)) == sorted([default.id, web.id])
    run = reconcile_run(
        window_start=datetime(2026, 2, 6, tzinfo=UTC), window_end=datetime(2026, 2, 7, tzinfo=UTC)
    )
    assert run.differences == []
