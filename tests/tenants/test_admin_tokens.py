"""Tenant admin tokens: issued by `manage.py apply`, stored as a keyed hash, accepted on
the management API and never on /v1."""

import subprocess

import httpx
import orjson
import pytest
import yaml

from apps.keys.hashing import secret_hash
from apps.provisioning.services import ConfigError, config_apply
from apps.tenants.models import AdminToken
from apps.tenants.selectors import admin_token_get_active
from apps.tenants.services import admin_token_issue, admin_token_revoke
from tests.conftest import PYTHON, ROOT, seed_document


def document(upstream_url: str = "http://127.0.0.1:9/v1") -> dict:
    doc = seed_document(upstream_url)
    doc["tenants"][0]["admin_tokens"] = [{"name": "ops"}, {"name": "finance"}]
    return doc


def test_apply_issues_admin_tokens_once_and_prints_them(transactional_db, server_env, tmp_path):
    path = tmp_path / "tollgate.yaml"
    path.write_text(yaml.safe_dump(document()))
    run = lambda: subprocess.run(  # noqa: E731
        [PYTHON, "manage.py", "apply", str(path)],
        cwd=ROOT,
        env=server_env,
        capture_output=True,
        check=True,
    )
    output = orjson.loads(run().stdout)
    created = output["admin_tokens_created"]
    assert [(t["tenant"], t["name"]) for t in created] == [("acme", "ops"), ("acme", "finance")]
    assert all(t["secret"].startswith("tga-") and len(t["secret"]) > 40 for t in created)
    assert len(output["keys_created"]) == 2
    # Only the keyed hash is stored; the secret is nowhere in the row.
    for t in created:
        token = AdminToken.objects.get(name=t["name"])
        assert token.key_hash == secret_hash(t["secret"])
        assert t["secret"] not in str(vars(token))
        assert token.prefix == t["secret"][:10]
    again = orjson.loads(run().stdout)
    assert again["admin_tokens_created"] == [] and again["keys_created"] == []
    assert AdminToken.objects.count() == 2


def test_invalid_admin_tokens_change_nothing(db):
    doc = document()
    doc["tenants"][0]["admin_tokens"] = [{"name": "ops"}, {"name": "ops"}]
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.admin_tokens\[1\]\.name"):
        config_apply(document=doc)
    doc["tenants"][0]["admin_tokens"] = [{"name": "ops", "scope": "all"}]
    with pytest.raises(ConfigError, match=r"admin_tokens\[0\]\.scope"):
        config_apply(document=doc)
    assert not AdminToken.objects.exists()


def test_revoked_tokens_are_refused_and_the_name_can_be_reissued(db):
    config_apply(document=seed_document("http://127.0.0.1:9/v1"))
    from apps.tenants.models import Tenant

    acme = Tenant.objects.get(name="acme")
    token, secret = admin_token_issue(tenant=acme, name="ops")
    assert admin_token_get_active(secret=secret) == token
    admin_token_revoke(admin_token=token)
    assert admin_token_get_active(secret=secret) is None
    _new, new_secret = admin_token_issue(tenant=acme, name="ops")
    assert new_secret != secret and admin_token_get_active(secret=new_secret) is not None
    # An inference-key-shaped secret never matches, even with a stored hash.
    assert admin_token_get_active(secret="tg-" + new_secret[4:]) is None


@pytest.mark.e2e
def test_an_admin_token_is_never_accepted_on_v1(transactional_db, gateway, upstream):
    result = config_apply(document=document(upstream.base_url))
    admin_secret = result.admin_tokens_created[0]["secret"]
    inference_secret = result.keys_created[0]["secret"]
    for headers in (
        {"Authorization": f"Bearer {admin_secret}"},
        {"x-api-key": admin_secret},
    ):
        r = httpx.get(gateway + "/v1/models", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(
            gateway + "/v1/chat/completions",
            headers=headers,
            json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 401
    assert (
        httpx.get(
            gateway + "/v1/models", headers={"Authorization": f"Bearer {inference_secret}"}
        ).status_code
        == 200
    )
    # And an inference key is not a management credential.
    r = httpx.get(
        gateway + "/api/v1/statements", headers={"Authorization": f"Bearer {inference_secret}"}
    )
    assert r.status_code == 401
    r = httpx.get(
        gateway + "/api/v1/statements", headers={"Authorization": f"Bearer {admin_secret}"}
    )
    assert r.status_code == 200 and r.json()["object"] == "list"
