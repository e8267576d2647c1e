"""CSV exports never hand a spreadsheet a formula: text a client chose (the model name it
sent) is neutralised in every export route, for admin tokens and dashboard sessions alike;
numbers Tollgate writes stay numbers."""

import csv
import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from apps.billing.services import rollup_sync
from apps.tenants.models import Membership
from tests.billing.billing_support import event, ingest, ts

FEB = int(ts("2026-02-01 00:00"))
MAR = int(ts("2026-03-01 00:00"))
FORMULAS = ["=cmd|' /C calc'!A0", "+1", "-1+1", "@SUM(1)", "\t=1", "\r=1", "  =1+1"]
# What a spreadsheet runs: a cell starting with one of these (after leading spaces).
RUNS_AS_FORMULA = ("=", "+", "-", "@", "\t", "\r")
EXPORTS = [
    pytest.param("/api/v1/usage/records.csv", {}, id="records"),
    pytest.param("/api/v1/usage/rollups.csv", {"granularity": "hour"}, id="hourly-rollups"),
    pytest.param("/api/v1/usage/rollups.csv", {"granularity": "day"}, id="daily-rollups"),
]


@pytest.fixture
def hostile(world):
    ingest(
        *(
            event(world.acme_key, f"2026-02-10 09:{minute:02d}:00", model=model)
            for minute, model in enumerate([*FORMULAS, "gpt-4o-mini"])
        )
    )
    rollup_sync()
    return world


def token_client(world) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.acme_token}")
    return client


def session_client(world) -> Client:
    user = User.objects.create_user("csv-owner", password="x")
    Membership.objects.create(user=user, tenant=world.acme, role=Membership.Role.OWNER)
    client = Client()
    client.force_login(user)
    return client


def exported_rows(client, path: str, params: dict) -> list[dict[str, str]]:
    response = client.get(path, {"start_time": FEB, "end_time": MAR, **params})
    assert response.status_code == 200, response
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text, newline="")))


def formula_cells(rows: list[dict[str, str]]) -> list[str]:
    return [
        cell
        for row in rows
        for cell in row.values()
        if cell.lstrip(" ").startswith(RUNS_AS_FORMULA)
    ]


@pytest.mark.parametrize(("path", "params"), EXPORTS)
def test_an_export_read_with_an_admin_token_has_no_cell_a_spreadsheet_would_run(
    hostile, path, params
):
    rows = exported_rows(token_client(hostile), path, params)
    assert formula_cells(rows) == []


@pytest.mark.parametrize(("path", "params"), EXPORTS)
def test_an_export_read_from_the_dashboard_has_no_cell_a_spreadsheet_would_run(
    hostile, path, params
):
    rows = exported_rows(session_client(hostile), path, params)
    assert formula_cells(rows) == []


@pytest.mark.parametrize(("path", "params"), EXPORTS)
def test_a_formula_model_name_is_exported_as_quoted_text(hostile, path, params):
    rows = exported_rows(token_client(hostile), path, params)
    assert {row["model"] for row in rows} == {"'" + m for m in FORMULAS} | {"gpt-4o-mini"}


def test_numbers_in_an_export_stay_numbers(hostile):
    rows = exported_rows(token_client(hostile), "/api/v1/usage/records.csv", {})
    assert {Decimal(row["prompt_tokens"]) for row in rows} == {Decimal(1000)}


def test_a_formula_requested_model_is_exported_as_quoted_text(hostile):
    rows = exported_rows(token_client(hostile), "/api/v1/usage/records.csv", {})
    assert {row["requested_model"] for row in rows} == {"'" + m for m in FORMULAS} | {"gpt-4o-mini"}
