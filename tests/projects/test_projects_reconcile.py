"""A project's budget counter and a per-model budget counter are reconciled against the
ledger like a key's."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.core.redis import sync_client
from apps.keys.services import api_key_issue
from apps.ledger.models import UsageRecord
from apps.limits.limiter import budget_period_bounds, scope_keys
from apps.limits.services import budget_reconcile
from apps.projects.models import Project
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def private_usage_stream(settings, redis_url) -> None:
    settings.LEDGER_STREAM = f"{settings.LEDGER_STREAM}:project-reconcile-tests"
    sync_client().delete(settings.LEDGER_STREAM)


def spend(key, project, request_id: str, price: str, model: str = "test-model") -> None:
    UsageRecord.objects.create(
        request_id=request_id,
        tenant_id=key.tenant_id,
        api_key=key,
        project=project,
        model=model,
        protocol="openai",
        status=200,
        outcome="ok",
        created_at=datetime.now(UTC),
        cost=Decimal(price),
        price=Decimal(price),
    )


def counter(name: str) -> str:
    return scope_keys(name, budget_period_bounds("monthly", datetime.now(UTC))[0])[5]


def test_a_drifted_project_counter_is_corrected():
    tenant = Tenant.objects.create(name="recon")
    web = Project.objects.create(tenant=tenant, name="web", budget_amount=Decimal("10"))
    key = api_key_issue(tenant=tenant, name="k", project=web)[0]
    spend(key, web, "r-p1", "1.5")
    sync_client().set(counter(f"p:{web.id}"), 7)
    budget_reconcile()
    assert int(sync_client().get(counter(f"p:{web.id}"))) == 1_500_000_000


def test_a_drifted_per_model_counter_of_a_project_counts_only_that_model():
    tenant = Tenant.objects.create(name="recon-model")
    web = Project.objects.create(
        tenant=tenant,
        name="web",
        model_limits={"test-model": {"budget": {"amount": "10", "period": "monthly"}}},
    )
    key = api_key_issue(tenant=tenant, name="k", project=web)[0]
    spend(key, web, "r-m1", "2")
    spend(key, web, "r-m2", "3", model="other-model")
    sync_client().set(counter(f"pm:{web.id}:test-model"), 7)
    budget_reconcile()
    assert int(sync_client().get(counter(f"pm:{web.id}:test-model"))) == 2_000_000_000
