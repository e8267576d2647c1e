"""Shared helpers for the billing tests: two tenants with keys and admin tokens, events
put through the real ingest (Redis stream → Postgres), and independent cost arithmetic."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from django.conf import settings

from apps.core.redis import sync_client
from apps.keys.models import ApiKey
from apps.ledger.events import UsageEvent
from apps.ledger.services import usage_ingest
from apps.provisioning.services import config_apply
from apps.tenants.models import Tenant
from tests.conftest import seed_document, wait_until

PRICE_JAN = {"input": "1.00", "cached": "0.50", "output": "2.00"}


@dataclass
class World:
    acme: Tenant
    globex: Tenant
    acme_key: ApiKey
    acme_key2: ApiKey
    globex_key: ApiKey
    acme_token: str
    globex_token: str


def world_document(upstream_url: str = "http://127.0.0.1:9/v1") -> dict:
    doc = seed_document(upstream_url)
    doc["tenants"][0]["admin_tokens"] = [{"name": "ops"}]
    doc["tenants"].append(
        {
            "name": "globex",
            "keys": [{"name": "main", "models": ["test-model", "other-model"]}],
            "admin_tokens": [{"name": "ops"}],
        }
    )
    return doc


def world_make(upstream_url: str = "http://127.0.0.1:9/v1") -> World:
    result = config_apply(document=world_document(upstream_url))
    tokens = {t["tenant"]: t["secret"] for t in result.admin_tokens_created}
    return World(
        acme=Tenant.objects.get(name="acme"),
        globex=Tenant.objects.get(name="globex"),
        acme_key=ApiKey.objects.get(tenant__name="acme", name="main"),
        acme_key2=ApiKey.objects.get(tenant__name="acme", name="restricted"),
        globex_key=ApiKey.objects.get(tenant__name="globex", name="main"),
        acme_token=tokens["acme"],
        globex_token=tokens["globex"],
    )


@pytest.fixture
def stream(clean_stream):
    """A usage stream of this test's own (tests/conftest.py)."""
    return clean_stream


@pytest.fixture
def world(db, stream) -> World:
    return world_make()


def ts(text: str) -> float:
    """'2026-02-10 13:05' (UTC) → epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


_counter = iter(range(10**9))


def event(
    key: ApiKey,
    when: str | float,
    *,
    model: str = "test-model",
    prompt: int = 1000,
    completion: int = 500,
    cached: int = 0,
    status: int = 200,
    request_id: str | None = None,
) -> UsageEvent:
    return UsageEvent(
        request_id=request_id or f"req-billing-{next(_counter)}",
        tenant_id=key.tenant_id,
        api_key_id=key.id,
        model=model,
        protocol="openai",
        endpoint="chat.completions",
        stream=False,
        created_at=ts(when) if isinstance(when, str) else when,
        status=status,
        outcome="ok" if status < 400 else "upstream_error",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
    )


def ingest(*events: UsageEvent) -> None:
    client = sync_client()
    for e in events:
        client.xadd(settings.LEDGER_STREAM, {"e": e.to_bytes()})
    usage_ingest(consumer="billing-test", max_seconds=30)
    # Without the stream fixture (tests on committed data), the session's Celery worker
    # reads the same stream and may hold some: drained when either is done.
    wait_until(lambda: client.xlen(settings.LEDGER_STREAM) == 0, timeout=30)


def expected_cost(prices: dict[str, str], prompt: int, completion: int, cached: int) -> Decimal:
    """Independent arithmetic (fractions, not the code under test)."""
    value = (
        Fraction(prompt - cached) * Fraction(prices["input"])
        + Fraction(cached) * Fraction(prices["cached"])
        + Fraction(completion) * Fraction(prices["output"])
    ) / 1_000_000
    assert (value * 10**12).denominator == 1
    return Decimal(value.numerator) / Decimal(value.denominator)
