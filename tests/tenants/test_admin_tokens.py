"""Tenant admin tokens: issued by `manage.py apply` or by owners, stored as a keyed hash,
accepted on the management API and never on /v1, and never worth more than their creator."""

import importlib
import subprocess

import httpx
import orjson
import pytest
import yaml
from django.test import Client
from django.urls import reverse

from apps.keys.hashing import secret_hash
from apps.provisioning.services import ConfigError, config_apply
from apps.tenants.models import AdminToken, Membership
from apps.tenants.selectors import admin_token_get_active
from apps.tenants.services import (
    TenantError,
    admin_token_issue,
    admin_token_revoke,
    membership_set_role,
)
from tests.api.api_support import token_client, user_client
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


# One rule on both surfaces: owners create and revoke admin tokens; a token acts with at
# most admin, and never more than its creator's role in the tenant now. -----------------


def dashboard_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def owner_issued_secret(org) -> str:
    response = user_client(org.owner).post("/api/v1/admin-tokens", {"name": "ci"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["secret"]


def demote_owner(org, role: str) -> None:
    membership_set_role(membership=Membership.objects.get(user=org.admin), role="owner")
    membership_set_role(membership=Membership.objects.get(user=org.owner), role=role)


def test_an_admin_member_cannot_create_an_admin_token_on_the_api(org):
    response = user_client(org.admin).post("/api/v1/admin-tokens", {"name": "x"}, format="json")
    assert response.status_code == 403


def test_an_admin_member_cannot_create_an_admin_token_on_the_dashboard(org):
    response = dashboard_client(org.admin).post(reverse("dashboard:token-create"), {"name": "x"})
    assert response.status_code == 403


def test_an_admin_member_cannot_revoke_an_admin_token_on_the_api(org):
    token = org.acme_token_row()
    response = user_client(org.admin).post(f"/api/v1/admin-tokens/{token.id}/revoke")
    assert response.status_code == 403


def test_an_admin_member_cannot_revoke_an_admin_token_on_the_dashboard(org):
    token = org.acme_token_row()
    url = reverse("dashboard:token-revoke", args=[token.id])
    assert dashboard_client(org.admin).post(url).status_code == 403


def test_an_admin_token_cannot_create_an_admin_token(org):
    response = token_client(org.acme_token).post(
        "/api/v1/admin-tokens", {"name": "x"}, format="json"
    )
    assert response.status_code == 403


def test_an_admin_token_cannot_revoke_an_admin_token(org):
    spare, _secret = admin_token_issue(tenant=org.acme, name="spare")
    response = token_client(org.acme_token).post(f"/api/v1/admin-tokens/{spare.id}/revoke")
    assert response.status_code == 403


def test_refused_attempts_create_no_token(org):
    token_client(org.acme_token).post("/api/v1/admin-tokens", {"name": "x"}, format="json")
    user_client(org.admin).post("/api/v1/admin-tokens", {"name": "y"}, format="json")
    dashboard_client(org.admin).post(reverse("dashboard:token-create"), {"name": "z"})
    assert not AdminToken.objects.filter(name__in=["x", "y", "z"]).exists()


def test_the_token_service_refuses_a_token_as_creator(org):
    with pytest.raises(TenantError, match="admin token cannot create"):
        admin_token_issue(tenant=org.acme, name="x", actor=org.acme_token_row())


def test_an_owner_creates_an_admin_token_on_the_dashboard(org):
    response = dashboard_client(org.owner).post(reverse("dashboard:token-create"), {"name": "d"})
    assert response.status_code == 302
    assert AdminToken.objects.get(name="d").created_by == org.owner


def test_a_token_an_owner_created_acts_as_admin(org):
    secret = owner_issued_secret(org)
    response = token_client(secret).post("/api/v1/keys", {"name": "k"}, format="json")
    assert response.status_code == 201


def test_a_token_an_owner_created_cannot_manage_members(org):
    secret = owner_issued_secret(org)
    assert token_client(secret).get("/api/v1/members").status_code == 403


def test_a_token_of_a_creator_demoted_to_viewer_can_only_read(org):
    secret = owner_issued_secret(org)
    demote_owner(org, "viewer")
    response = token_client(secret).post("/api/v1/keys", {"name": "k"}, format="json")
    assert response.status_code == 403


def test_a_token_of_a_creator_demoted_to_viewer_still_reads(org):
    secret = owner_issued_secret(org)
    demote_owner(org, "viewer")
    assert token_client(secret).get("/api/v1/keys").status_code == 200


def test_a_token_stops_working_when_its_creator_leaves_the_tenant(org):
    secret = owner_issued_secret(org)
    Membership.objects.get(user=org.owner).delete()
    assert token_client(secret).get("/api/v1/keys").status_code == 401


def test_a_token_stops_working_when_its_creator_is_deleted(org):
    secret = owner_issued_secret(org)
    org.owner.delete()
    assert token_client(secret).get("/api/v1/keys").status_code == 401


def test_a_token_stops_working_when_its_creator_is_deactivated(org):
    secret = owner_issued_secret(org)
    org.owner.is_active = False
    org.owner.save()
    assert token_client(secret).get("/api/v1/keys").status_code == 401


def test_a_token_the_operator_issued_acts_as_admin(org):
    response = token_client(org.acme_token).post("/api/v1/keys", {"name": "k"}, format="json")
    assert response.status_code == 201


def test_existing_tokens_get_their_creator_from_the_audit_log(org):
    from django.apps import apps as registry

    migration = importlib.import_module("apps.tenants.migrations.0005_admintoken_created_by")
    token, _secret = admin_token_issue(tenant=org.acme, name="old", actor=org.admin)
    AdminToken.objects.filter(id=token.id).update(created_by=None, issued_by_user=False)
    migration.creators_from_audit_log(registry, None)
    token.refresh_from_db()
    assert (token.created_by, token.issued_by_user) == (org.admin, True)


def test_existing_operator_tokens_stay_the_operators(org):
    from django.apps import apps as registry

    migration = importlib.import_module("apps.tenants.migrations.0005_admintoken_created_by")
    migration.creators_from_audit_log(registry, None)
    assert org.acme_token_row().issued_by_user is False
