"""Reports narrowed to the projects a member sees: a member of the tenant with roles in
some projects reads those projects' usage only — on the usage and costs API, the CSV
exports and the dashboard's usage page, with a session or with an admin token they made —
and none of the tenant-wide figures (statements, the balance: 403). Asking for another
project or another project's key is a 404, as another tenant's. Owners, admins and
viewers without project roles read the whole tenant."""

import csv
import io
import json
from collections import defaultdict
from datetime import date
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from apps.billing.models import Statement
from apps.billing.services import rollup_sync
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.projects.models import Project, ProjectMembership
from apps.tenants.models import Membership
from apps.tenants.services import admin_token_issue
from tests.billing.billing_support import event, ingest, ts
from tests.billing.billing_support import stream as stream  # noqa: F401 - fixture
from tests.billing.billing_support import world as world  # noqa: F401 - fixture

FEB = int(ts("2026-02-01 00:00"))
MAR = int(ts("2026-03-01 00:00"))
USAGE = "/api/v1/organization/usage/completions"
COSTS = "/api/v1/organization/costs"
RECORDS = "/api/v1/usage/records.csv"
ROLLUPS = "/api/v1/usage/rollups.csv"
RANGE = {"start_time": FEB, "end_time": MAR, "limit": 31}


@pytest.fixture
def mix(world):
    """acme: its default project (key ``main``) and ``web`` (key ``restricted`` moved
    there), usage in both over February; pat is a tenant viewer and admin of web, with an
    admin token of their own; viv is a tenant viewer with no project role."""
    web = Project.objects.create(tenant=world.acme, name="web")
    ApiKey.objects.filter(id=world.acme_key2.id).update(project=web)
    world.acme_key2.refresh_from_db()
    default = Project.objects.get(tenant=world.acme, is_default=True)
    events = []
    for day in range(1, 11):
        for key, project, prompt in ((world.acme_key, default, 100), (world.acme_key2, web, 7)):
            e = event(key, f"2026-02-{day:02d} 10:00:00", prompt=prompt + day, completion=day)
            e.project_id = project.id
            events.append(e)
    legacy = event(world.acme_key2, "2026-02-12 10:00:00", prompt=5)  # no project: its key's
    ingest(*events, legacy)
    rollup_sync()
    pat = User.objects.create_user("pat", "pat@example.com", "pw")
    Membership.objects.create(user=pat, tenant=world.acme, role="viewer")
    ProjectMembership.objects.create(project=web, user=pat, role="admin")
    viv = User.objects.create_user("viv", "viv@example.com", "pw")
    Membership.objects.create(user=viv, tenant=world.acme, role="viewer")
    owner = User.objects.create_user("olga", "olga@example.com", "pw")
    Membership.objects.create(user=owner, tenant=world.acme, role="owner")
    world.web, world.default, world.pat, world.viv, world.owner = web, default, pat, viv, owner
    world.pat_token = admin_token_issue(tenant=world.acme, name="pat", actor=pat)[1]
    return world


def session(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def token(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def caller(mix, who: str) -> APIClient:
    return token(mix.pat_token) if who == "pat-token" else session(getattr(mix, who))


def page_of(response) -> dict:
    assert response.status_code == 200, response.content
    return json.loads(response.content, parse_float=Decimal)


def results(page: dict) -> list[dict]:
    return [r for bucket in page["data"] for r in bucket["results"]]


def ledger(tenant, project_ids=None) -> dict:
    """The ledger's own sums (row by row), of some projects or all."""
    sums: dict = defaultdict(Decimal)
    for r in UsageRecord.objects.filter(tenant=tenant).select_related("api_key"):
        if project_ids is None or (r.project_id or r.api_key.project_id) in project_ids:
            sums["requests"] += 1
            sums["input_tokens"] += r.prompt_tokens
            sums["price"] += r.price
    return dict(sums)


def usage_sums(page: dict) -> dict:
    rows = results(page)
    return {
        "requests": sum(r["num_model_requests"] for r in rows),
        "input_tokens": sum(r["input_tokens"] for r in rows),
    }


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response.content
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


# The usage and costs API -------------------------------------------------------------------


@pytest.mark.parametrize("who", ["pat", "pat-token"])
def test_a_project_admins_usage_is_their_projects_ledger(mix, who):
    got = usage_sums(page_of(caller(mix, who).get(USAGE, RANGE)))
    want = ledger(mix.acme, {mix.web.id})
    assert got == {"requests": want["requests"], "input_tokens": want["input_tokens"]}


@pytest.mark.parametrize("who", ["pat", "pat-token"])
def test_a_project_admins_costs_are_their_projects_ledger_to_the_unit(mix, who):
    rows = results(page_of(caller(mix, who).get(COSTS, RANGE)))
    assert sum(r["amount"]["value"] for r in rows) == ledger(mix.acme, {mix.web.id})["price"]


def test_a_project_admins_usage_by_project_names_only_theirs(mix):
    rows = results(page_of(session(mix.pat).get(USAGE, {**RANGE, "group_by": "project_id"})))
    assert {r["project_id"] for r in rows} == {str(mix.web.id)}


def test_a_project_admins_usage_by_key_in_hours_names_only_their_projects_keys(mix):
    params = {**RANGE, "bucket_width": "1h", "limit": 168, "group_by": "api_key_id"}
    rows = results(page_of(session(mix.pat).get(USAGE, params)))
    assert {r["api_key_id"] for r in rows} == {str(mix.acme_key2.id)}


@pytest.mark.parametrize("path", [USAGE, COSTS])
def test_another_project_asked_for_by_a_project_admin_is_404(mix, path):
    response = session(mix.pat).get(path, {**RANGE, "project_ids": mix.default.id})
    assert response.status_code == 404


@pytest.mark.parametrize("path", [USAGE, COSTS])
def test_another_projects_key_asked_for_by_a_project_admin_is_404(mix, path):
    response = session(mix.pat).get(path, {**RANGE, "api_key_ids": mix.acme_key.id})
    assert response.status_code == 404


def test_their_own_project_asked_for_by_a_project_admin_is_answered(mix):
    got = usage_sums(page_of(session(mix.pat).get(USAGE, {**RANGE, "project_ids": mix.web.id})))
    assert got["requests"] == ledger(mix.acme, {mix.web.id})["requests"]


@pytest.mark.parametrize("who", ["owner", "viv"])
def test_owners_and_viewers_without_project_roles_read_the_whole_tenant(mix, who):
    rows = results(page_of(session(getattr(mix, who)).get(COSTS, RANGE)))
    assert sum(r["amount"]["value"] for r in rows) == ledger(mix.acme)["price"]


def test_the_tenants_own_token_reads_the_whole_tenant(mix):
    got = usage_sums(page_of(token(mix.acme_token).get(USAGE, RANGE)))
    assert got["requests"] == ledger(mix.acme)["requests"]


# CSV exports ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["pat", "pat-token"])
def test_a_project_admins_records_csv_holds_only_their_projects_rows(mix, who):
    rows = csv_rows(caller(mix, who).get(RECORDS, {"start_time": FEB, "end_time": MAR}))
    assert {r["api_key_id"] for r in rows} == {str(mix.acme_key2.id)}


def test_a_project_admins_records_csv_holds_every_row_of_their_projects(mix):
    rows = csv_rows(session(mix.pat).get(RECORDS, {"start_time": FEB, "end_time": MAR}))
    assert len(rows) == ledger(mix.acme, {mix.web.id})["requests"]


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_a_project_admins_rollups_csv_holds_only_their_project(mix, granularity):
    params = {"start_time": FEB, "end_time": MAR, "granularity": granularity}
    rows = csv_rows(session(mix.pat).get(ROLLUPS, params))
    assert {r["project_id"] for r in rows} == {str(mix.web.id)}


def test_an_owners_records_csv_holds_every_row(mix):
    rows = csv_rows(session(mix.owner).get(RECORDS, {"start_time": FEB, "end_time": MAR}))
    assert len(rows) == ledger(mix.acme)["requests"]


# Tenant-wide figures -----------------------------------------------------------------------


@pytest.fixture
def statement(mix) -> Statement:
    return Statement.objects.create(
        tenant=mix.acme, period_start=date(2026, 2, 1), period_end=date(2026, 3, 1)
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/statements",
        "/api/v1/statements/{statement}",
        "/api/v1/balance",
        "/api/v1/balance/entries",
        "/api/v1/balance/entries.csv",
    ],
)
@pytest.mark.parametrize("who", ["pat", "pat-token"])
def test_tenant_wide_figures_are_403_for_a_project_admin(mix, statement, path, who):
    response = caller(mix, who).get(path.format(statement=statement.id))
    assert response.status_code == 403


@pytest.mark.parametrize("path", ["/api/v1/statements", "/api/v1/balance"])
def test_tenant_wide_figures_are_read_by_a_viewer_without_project_roles(mix, statement, path):
    assert session(mix.viv).get(path).status_code == 200


# The dashboard ----------------------------------------------------------------------------


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def usage_page(user: User, **params):
    response = browser(user).get(
        "/dashboard/usage/", {"start": "2026-02-01", "end": "2026-02-28", **params}
    )
    assert response.status_code == 200
    return response


def charted_requests(response) -> int:
    return sum(t["requests"] for t in response.context["charts"].totals)


def test_dashboard_a_project_admins_usage_page_charts_only_their_projects(mix):
    assert charted_requests(usage_page(mix.pat)) == ledger(mix.acme, {mix.web.id})["requests"]


def test_dashboard_a_project_admins_usage_split_by_key_names_only_their_projects_keys(mix):
    names = {t["name"] for t in usage_page(mix.pat, group="key").context["charts"].totals}
    assert names == {f"{mix.acme_key2.name} (#{mix.acme_key2.id})"}


def test_dashboard_a_project_admins_recent_requests_are_their_projects(mix):
    recent = usage_page(mix.pat).context["recent"]
    assert {r["api_key__name"] for r in recent} == {mix.acme_key2.name}


def test_dashboard_a_project_admin_sees_no_statements_link(mix):
    assert b"/dashboard/statements/" not in usage_page(mix.pat).content


def test_dashboard_an_owners_usage_page_charts_the_whole_tenant(mix):
    assert charted_requests(usage_page(mix.owner)) == ledger(mix.acme)["requests"]


@pytest.mark.parametrize("path", ["/dashboard/statements/", "/dashboard/balance/"])
def test_dashboard_tenant_wide_pages_are_403_for_a_project_admin(mix, path):
    assert browser(mix.pat).get(path).status_code == 403


def test_dashboard_a_statement_is_403_for_a_project_admin(mix, statement):
    response = browser(mix.pat).get(f"/dashboard/statements/{statement.id}/")
    assert response.status_code == 403
