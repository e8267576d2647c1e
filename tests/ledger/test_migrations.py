"""Existing ledger data survives the move to cost and price: an old record keeps its
cost, and its price (what the tenant was billed) equals that cost."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("ledger", "0005_usagerecord_byok"), ("billing", "0001_initial")]


@pytest.fixture
def migrated_record(transactional_db):
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE)
    others = [node for node in latest if node[0] not in dict(BEFORE)]
    old = executor.loader.project_state(BEFORE + others).apps
    tenant = old.get_model("tenants", "Tenant").objects.create(name="oldco")
    project = old.get_model("projects", "Project").objects.create(
        tenant=tenant, name="default", is_default=True
    )
    key = old.get_model("keys", "ApiKey").objects.create(
        tenant=tenant, project=project, name="k", prefix="tg-old", key_hash="h" * 64
    )
    old.get_model("ledger", "UsageRecord").objects.create(
        request_id="req-old",
        tenant=tenant,
        api_key=key,
        model="m",
        protocol="openai",
        status=200,
        outcome="ok",
        created_at="2026-01-05T10:00:00Z",
        cost=Decimal("0.001234567891"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate(latest)
    from apps.ledger.models import UsageRecord

    return UsageRecord.objects.get(request_id="req-old")


def test_an_old_record_keeps_its_cost(migrated_record):
    assert migrated_record.cost == Decimal("0.001234567891")


def test_an_old_record_is_priced_at_its_cost(migrated_record):
    assert migrated_record.price == migrated_record.cost


def test_an_old_record_has_no_rate_card(migrated_record):
    assert migrated_record.rate_card_id is None
