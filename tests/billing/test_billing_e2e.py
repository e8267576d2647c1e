"""End to end: requests through the real gateway, ingested by a real Celery worker, billed
to the unit; the reports read through the real ASGI server and the openai SDK."""

import csv
import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import openai
import pytest
from django.utils import timezone

from apps.billing.models import Statement
from apps.billing.services import reconcile_run, rollup_sync, statements_sync
from apps.ledger.models import UsageRecord
from apps.provisioning.services import config_apply
from tests.billing.billing_support import PRICE_JAN, expected_cost, world_document
from tests.conftest import wait_until

pytestmark = pytest.mark.e2e
N = 60


def test_n_requests_give_n_records_and_a_statement_equal_to_their_costs(
    transactional_db, gateway, upstream, celery_worker
):
    result = config_apply(document=world_document(upstream.base_url))
    secret = next(k["secret"] for k in result.keys_created if k["name"] == "main")
    admin = next(t["secret"] for t in result.admin_tokens_created if t["tenant"] == "acme")
    client = openai.OpenAI(base_url=gateway + "/v1", api_key=secret, max_retries=0)

    def call(i: int):
        response = client.chat.completions.with_raw_response.create(
            model="test-model",
            messages=[{"role": "user", "content": f"request {i} " + "x" * (i * 7)}],
            stream=bool(i % 3 == 0),
            **({"stream_options": {"include_usage": True}} if i % 3 == 0 else {}),
        )
        request_id = response.headers["x-request-id"]
        if i % 3 == 0:
            usage = [c.usage for c in response.parse() if c.usage][-1]
        else:
            usage = response.parse().usage
        cached = getattr(usage.prompt_tokens_details, "cached_tokens", 0) or 0
        return request_id, usage.prompt_tokens, usage.completion_tokens, cached

    with ThreadPoolExecutor(8) as pool:
        calls = list(pool.map(call, range(N)))
    ids = [c[0] for c in calls]
    assert len(set(ids)) == N
    wait_until(lambda: UsageRecord.objects.filter(request_id__in=ids).count() == N, timeout=60)
    assert UsageRecord.objects.filter(tenant__name="acme").count() == N

    independent = sum(
        (
            expected_cost(PRICE_JAN, prompt, completion, cached)
            for _, prompt, completion, cached in calls
        ),
        Decimal(0),
    )
    rollup_sync()
    statements_sync()
    now = timezone.now()
    statement = Statement.objects.get(tenant__name="acme", period_start=now.date().replace(day=1))
    assert statement.total == independent
    assert sum(line.amount for line in statement.lines.all()) == independent
    assert statement.lines.get().requests == N

    # The same figures through the live ASGI server, read with the official SDK.
    start = int((now - timedelta(days=1)).timestamp())
    admin_client = openai.OpenAI(
        base_url=gateway + "/api/v1", api_key="unused", admin_api_key=admin, max_retries=0
    )
    organization = admin_client.admin.organization
    usage = organization.usage.completions(
        start_time=start, bucket_width="1d", limit=3, group_by=["model"]
    )
    results = [r for bucket in usage.data for r in bucket.results]
    assert sum(r.num_model_requests for r in results) == N
    assert sum(r.input_tokens for r in results) == sum(c[1] for c in calls)
    assert {r.model for r in results} == {"test-model"}
    raw = organization.usage.with_raw_response.costs(start_time=start, limit=3)
    page = json.loads(raw.http_response.content, parse_float=Decimal)
    amounts = [r["amount"]["value"] for bucket in page["data"] for r in bucket["results"]]
    assert sum(amounts) == independent
    assert raw.parse().data[0].object == "bucket"

    # CSV streamed by the ASGI server (async iterator over a server-side cursor).
    with httpx.stream(
        "GET",
        gateway + "/api/v1/usage/records.csv",
        params={"start_time": start},
        headers={"Authorization": f"Bearer {admin}"},
    ) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        text = response.read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert sum(Decimal(r["cost"]) for r in rows) == independent
    assert reconcile_run(
        window_start=now - timedelta(days=1), window_end=now + timedelta(hours=1)
    ).ok
