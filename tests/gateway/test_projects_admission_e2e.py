"""Project, per-model and per-end-user limits hold under concurrency across two server
processes sharing Redis: the admitted requests are held at the upstream (#gate) until
every other one was refused, so none frees what it reserved mid-burst."""

import asyncio

import httpx
import pytest

from apps.keys.services import api_key_issue
from apps.ledger.models import UsageRecord
from apps.projects.models import Project
from apps.tenants.models import Tenant
from tests.conftest import release_when_refused, start_gateway, wait_until

pytestmark = pytest.mark.e2e

SCOPE = "x-tollgate-limit-scope"


@pytest.fixture(scope="module")
def second_gateway(server_env):
    process = start_gateway(server_env, name="gateway2-projects")
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def body(text: str, **extra) -> dict:
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], **extra}


async def fire(
    upstream, urls: list[str], secrets: list[str], count: int, payload: dict, *, admitted: int
) -> list[httpx.Response]:
    """``count`` parallel requests, round-robin over ``urls`` and ``secrets``; the gate
    named in the payload opens once all but ``admitted`` are answered."""
    gate = payload["messages"][0]["content"].split("#gate=")[1].split()[0]
    async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=count)) as c:
        tasks = [
            asyncio.create_task(
                c.post(
                    urls[i % len(urls)] + "/v1/chat/completions",
                    json=payload,
                    headers={"Authorization": f"Bearer {secrets[i % len(secrets)]}"},
                )
            )
            for i in range(count)
        ]
        return await release_when_refused(upstream, gate, tasks, admitted=admitted)


def statuses(responses) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def project_with_keys(name: str, keys: int = 3, key_fields=None, **fields) -> list[str]:
    tenant = Tenant.objects.get(name="acme")
    project = Project.objects.create(tenant=tenant, name=name, **fields)
    return [
        api_key_issue(
            tenant=tenant,
            name=f"{name}-{n}",
            project=project,
            allowed_models=["*"],
            **(key_fields or {}),
        )[1]
        for n in range(keys)
    ]


def test_project_rpm_admits_exactly_50_of_200_across_three_keys_and_two_servers(
    gateway, second_gateway, seed, upstream
):
    secrets = project_with_keys("burst", rpm=50)
    responses = asyncio.run(
        fire(upstream, [gateway, second_gateway], secrets, 200, body("#gate=p50"), admitted=50)
    )
    assert statuses(responses) == {200: 50, 429: 150}


def test_the_200_burst_refusals_all_name_the_project(gateway, second_gateway, seed, upstream):
    secrets = project_with_keys("burst-scope", rpm=50)
    responses = asyncio.run(
        fire(upstream, [gateway, second_gateway], secrets, 200, body("#gate=p50s"), admitted=50)
    )
    assert {r.headers.get(SCOPE) for r in responses if r.status_code == 429} == {"project"}


# test-model: 1 and 2 µUSD per input and output token; the prompt's upper bound is 512 per
# request + 32 per message + its UTF-8 bytes (as tests/limits/test_limits_e2e.py).
def worst_case_nanos(payload: dict, max_tokens: int) -> int:
    text = payload["messages"][0]["content"]
    return (512 + 32 + len(text.encode()) + max_tokens * 2) * 1000


def _budget(payload: dict, admitted: int) -> tuple[int, dict]:
    worst = worst_case_nanos(payload, payload["max_tokens"])
    nanos = worst * admitted + worst // 2
    return nanos, {"amount": f"{nanos / 10**9:.9f}".rstrip("0"), "period": "monthly"}


# (what a refusal names, where the budget is)
LEVELS = [
    ("project", "project"),
    ("model", "project-model"),
    ("model", "key-model"),
    ("end_user", "end-user"),
]


@pytest.mark.parametrize("scope,level", LEVELS)
def test_a_budget_is_never_overspent_at_any_level_across_two_servers(
    gateway, second_gateway, seed, upstream, celery_worker, scope, level
):
    payload = body(f"#gate=budget-{level}", max_tokens=1000, user="shared-end-user")
    nanos, budget = _budget(payload, 10)
    model_budget = {"model_limits": {"test-model": {"budget": budget}}}
    if level == "key-model":  # one key: its own model budget is the only one
        secrets = project_with_keys(f"budget-{level}", keys=1, key_fields=model_budget)
    else:
        fields = {
            "project": {"budget_amount": budget["amount"]},
            "project-model": model_budget,
            "end-user": {"end_user_limits": {"budget": budget}},
        }[level]
        secrets = project_with_keys(f"budget-{level}", **fields)
    responses = asyncio.run(
        fire(upstream, [gateway, second_gateway], secrets, 100, payload, admitted=10)
    )
    assert statuses(responses) == {200: 10, 429: 90}
    assert {r.headers.get(SCOPE) for r in responses if r.status_code == 429} == {scope}
    admitted_ids = {r.headers["x-request-id"] for r in responses if r.status_code == 200}
    records = wait_until(
        lambda: (
            (qs := UsageRecord.objects.filter(request_id__in=admitted_ids)).count() == 10
            and list(qs)
        ),
        timeout=60,
    )
    assert sum(r.price for r in records) * 10**9 <= nanos
