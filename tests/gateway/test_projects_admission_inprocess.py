"""Admission at every level, in one round trip: the key, its project, the tenant, the
model's limits in the key and the project, and the end user each refuse naming their
scope (message and ``x-tollgate-limit-scope``), in OpenAI's and Anthropic's shapes; end
users and tags are checked, recorded on the ledger row with the project, and exported
neutralised."""

import csv
import io
import time

import orjson
import pytest
from rest_framework.test import APIClient

from apps.keys.services import api_key_issue
from apps.ledger.models import UsageRecord
from apps.projects.models import Project
from apps.tenants.models import Tenant
from apps.tenants.services import admin_token_issue, tenant_update_limits
from tests.conftest import wait_until
from tests.gateway.inprocess import InProcessGateway, ingest_usage

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = ["test-model", "other-model"]
SCOPE = "x-tollgate-limit-scope"


def project(tenant: Tenant, name: str = "web", **fields) -> Project:
    return Project.objects.create(tenant=tenant, name=name, **fields)


def issue(tenant: Tenant, project: Project | None = None, name: str = "k", **fields) -> str:
    fields.setdefault("allowed_models", MODELS)
    return api_key_issue(tenant=tenant, name=name, project=project, **fields)[1]


def chat(gw: InProcessGateway, secret: str, *, model: str = "test-model", headers=None, **body):
    return gw.request(
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
        content=orjson.dumps(
            {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
        ),
    )


def message(gw: InProcessGateway, secret: str, headers=None, **body):
    return gw.request(
        "POST",
        "/v1/messages",
        headers={"x-api-key": secret, "anthropic-version": "2023-06-01", **(headers or {})},
        content=orjson.dumps(
            {
                "model": "test-model",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}],
                **body,
            }
        ),
    )


def second_refused(send) -> "object":
    assert send().status_code == 200
    return send()


# Each level refuses naming its scope ---------------------------------------------------


def test_a_key_limit_refuses_naming_the_key(gw, acme):
    secret = issue(acme, project(acme, rpm=100), rpm=1)
    assert second_refused(lambda: chat(gw, secret)).headers[SCOPE] == "key"


def test_a_project_limit_refuses_naming_the_project(gw, acme):
    web = project(acme, rpm=1)
    first, second = issue(acme, web, "a"), issue(acme, web, "b")
    assert chat(gw, first).status_code == 200
    assert chat(gw, second).headers[SCOPE] == "project"


def test_a_project_refusal_says_project_in_its_message(gw, acme):
    secret = issue(acme, project(acme, rpm=1))
    refused = second_refused(lambda: chat(gw, secret))
    assert "project" in refused.json()["error"]["message"]


def test_a_project_refusal_is_a_429_rate_limit(gw, acme):
    secret = issue(acme, project(acme, rpm=1))
    assert second_refused(lambda: chat(gw, secret)).json()["error"]["code"] == (
        "rate_limit_exceeded"
    )


def test_a_tenant_limit_refuses_naming_the_tenant(gw, acme):
    tenant_update_limits(tenant=acme, rpm=1)
    first, second = issue(acme, project(acme, "a"), "a"), issue(acme, project(acme, "b"), "b")
    assert chat(gw, first).status_code == 200
    assert chat(gw, second).headers[SCOPE] == "tenant"


def test_a_keys_model_limit_refuses_that_model_naming_model(gw, acme):
    secret = issue(acme, model_limits={"test-model": {"rpm": 1}})
    assert second_refused(lambda: chat(gw, secret)).headers[SCOPE] == "model"


def test_a_keys_model_limit_names_the_model_in_its_message(gw, acme):
    secret = issue(acme, model_limits={"test-model": {"rpm": 1}})
    refused = second_refused(lambda: chat(gw, secret))
    assert "model test-model on this API key" in refused.json()["error"]["message"]


def test_a_keys_model_limit_leaves_other_models_alone(gw, acme):
    secret = issue(acme, model_limits={"test-model": {"rpm": 1}})
    second_refused(lambda: chat(gw, secret))
    assert chat(gw, secret, model="other-model").status_code == 200


def test_a_projects_model_limit_is_shared_by_its_keys(gw, acme):
    web = project(acme, model_limits={"test-model": {"rpm": 1}})
    first, second = issue(acme, web, "a"), issue(acme, web, "b")
    assert chat(gw, first).status_code == 200
    assert chat(gw, second).headers[SCOPE] == "model"


def test_a_projects_model_limit_says_project_in_its_message(gw, acme):
    secret = issue(acme, project(acme, model_limits={"test-model": {"tpm": 5000}}))
    refused = chat(gw, secret, max_tokens=6000)
    assert "model test-model in this project" in refused.json()["error"]["message"]


def test_an_end_user_limit_refuses_the_same_end_user(gw, acme):
    secret = issue(acme, project(acme, end_user_limits={"rpm": 1}))
    refused = second_refused(lambda: chat(gw, secret, user="alice"))
    assert refused.headers[SCOPE] == "end_user"


def test_an_end_user_limit_leaves_other_end_users_alone(gw, acme):
    secret = issue(acme, project(acme, end_user_limits={"rpm": 1}))
    second_refused(lambda: chat(gw, secret, user="alice"))
    assert chat(gw, secret, user="bob").status_code == 200


def test_requests_without_an_end_user_are_not_end_user_limited(gw, acme):
    secret = issue(acme, project(acme, end_user_limits={"rpm": 1}))
    chat(gw, secret)
    assert chat(gw, secret).status_code == 200


def test_the_end_user_header_counts_as_that_end_user(gw, acme):
    secret = issue(acme, project(acme, end_user_limits={"rpm": 1}))
    assert chat(gw, secret, user="carol").status_code == 200
    refused = chat(gw, secret, user="dave", headers={"x-tollgate-end-user": "carol"})
    assert refused.headers[SCOPE] == "end_user"


def test_an_end_user_is_counted_across_the_tenants_keys(gw, acme):
    web = project(acme, end_user_limits={"rpm": 1})
    first, second = issue(acme, web, "a"), issue(acme, web, "b")
    assert chat(gw, first, user="erin").status_code == 200
    assert chat(gw, second, user="erin").headers[SCOPE] == "end_user"


def test_an_anthropic_refusal_names_the_scope(gw, acme):
    secret = issue(acme, project(acme, rpm=1))
    assert second_refused(lambda: message(gw, secret)).headers[SCOPE] == "project"


def test_an_anthropic_refusal_is_a_rate_limit_error(gw, acme):
    secret = issue(acme, project(acme, rpm=1))
    assert second_refused(lambda: message(gw, secret)).json()["error"]["type"] == (
        "rate_limit_error"
    )


def test_anthropic_metadata_user_id_is_end_user_limited(gw, acme):
    secret = issue(acme, project(acme, end_user_limits={"rpm": 1}))
    refused = second_refused(lambda: message(gw, secret, metadata={"user_id": "frank"}))
    assert refused.headers[SCOPE] == "end_user"


def test_a_refused_level_reserves_nothing_at_the_others(gw, acme):
    """All or nothing: a request the key refuses does not use the project's minute."""
    web = project(acme, rpm=2)
    tight = issue(acme, web, "tight", rpm=1)
    assert chat(gw, tight).status_code == 200
    for _ in range(3):
        chat(gw, tight)  # refused by the key
    assert chat(gw, issue(acme, web, "other")).status_code == 200


# The project's allowlist and its edits ---------------------------------------------------


def test_a_projects_allowlist_narrows_its_keys(gw, acme):
    secret = issue(acme, project(acme, allowed_models=["other-model"]))
    assert chat(gw, secret).status_code == 403


def test_a_model_both_lists_allow_is_served(gw, acme):
    secret = issue(acme, project(acme, allowed_models=["other-model"]))
    assert chat(gw, secret, model="other-model").status_code == 200


def test_a_project_edit_reaches_the_gateway_like_a_key_edit(gw, acme):
    web = project(acme)
    secret = issue(acme, web)
    assert chat(gw, secret).status_code == 200
    web.allowed_models = []
    web.save()
    assert wait_until(lambda: chat(gw, secret).status_code == 403, timeout=5)


# End users and tags: checked, recorded ---------------------------------------------------


@pytest.mark.parametrize(
    "body,headers,param",
    [
        ({"user": "x" * 10_240}, {}, "user"),
        ({"user": "a\x00b"}, {}, "user"),
        ({"user": "a\nb"}, {}, "user"),
        ({}, {"x-tollgate-end-user": "a\x1bb"}, "x-tollgate-end-user"),
        ({}, {"x-tollgate-end-user": "x" * 10_240}, "x-tollgate-end-user"),
        ({}, {"x-tollgate-tags": "team:" + "x" * 10_240}, "x-tollgate-tags"),
        ({}, {"x-tollgate-tags": "team:=cmd|' /C calc'!A0"}, "x-tollgate-tags"),
        ({}, {"x-tollgate-tags": ",".join(f"k{n}:v" for n in range(11))}, "x-tollgate-tags"),
        ({}, {"x-tollgate-tags": "team:a\tb"}, "x-tollgate-tags"),
    ],
)
def test_hostile_end_users_and_tags_are_a_400_naming_the_field(gw, seed, body, headers, param):
    response = chat(gw, seed.secret, headers=headers, **body)
    assert (response.status_code, response.json()["error"]["param"]) == (400, param)


def test_a_non_string_user_is_a_400(gw, seed):
    assert chat(gw, seed.secret, user=5).status_code == 400


def test_a_hostile_anthropic_user_id_is_a_400_in_anthropic_shape(gw, seed):
    response = message(gw, seed.secret, metadata={"user_id": "a\x00b"})
    assert (response.status_code, response.json()["error"]["type"]) == (
        400,
        "invalid_request_error",
    )


def _record(response) -> UsageRecord:
    ingest_usage()
    return UsageRecord.objects.get(request_id=response.headers["x-request-id"])


def test_the_ledger_row_names_the_keys_project(gw, acme):
    web = project(acme)
    assert _record(chat(gw, issue(acme, web))).project_id == web.id


def test_the_ledger_row_records_the_end_user(gw, seed):
    assert _record(chat(gw, seed.secret, user="alice@example.com")).end_user == (
        "alice@example.com"
    )


def test_the_ledger_row_records_an_anthropic_end_user(gw, seed):
    assert _record(message(gw, seed.secret, metadata={"user_id": "u-42"})).end_user == "u-42"


def test_the_ledger_row_records_a_refused_requests_end_user(gw, acme):
    secret = issue(acme, project(acme, end_user_limits={"rpm": 1}))
    assert _record(second_refused(lambda: chat(gw, secret, user="gina"))).end_user == "gina"


def test_the_ledger_row_records_the_tags_merged_with_the_keys_defaults(gw, acme):
    secret = issue(acme, default_tags={"team": "web", "env": "prod"})
    response = chat(gw, secret, headers={"x-tollgate-tags": "env:staging,feature:chat"})
    assert _record(response).tags == {"team": "web", "env": "staging", "feature": "chat"}


def test_the_keys_default_tags_are_recorded_without_a_header(gw, acme):
    secret = issue(acme, default_tags={"team": "web"})
    assert _record(chat(gw, secret)).tags == {"team": "web"}


def test_a_request_without_attribution_records_none(gw, seed):
    record = _record(chat(gw, seed.secret))
    assert (record.end_user, record.tags) == ("", None)


def test_the_records_export_neutralises_a_formula_end_user(gw, acme):
    response = chat(gw, issue(acme), user="=cmd|' /C calc'!A0")
    record = _record(response)
    _token, secret = admin_token_issue(tenant=acme, name="csv")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    start = int(record.created_at.timestamp())
    exported = client.get(
        "/api/v1/usage/records.csv", {"start_time": start, "end_time": int(time.time()) + 60}
    )
    rows = list(
        csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode(), newline=""))
    )
    assert [r["end_user"] for r in rows if r["request_id"] == record.request_id] == [
        "'=cmd|' /C calc'!A0"
    ]
