"""The management API: every endpoint for every kind of caller. A tenant's objects are a
404 for anyone else; viewers cannot write; members and the audit log are for owners;
staff endpoints are for staff; input errors are 400s naming the field."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, get_resolver

from apps.alerts.models import WebhookEndpoint
from apps.audit.models import AuditEvent
from apps.catalog.models import Backend, Deployment, Model, Price
from apps.keys.hashing import secret_hash
from apps.keys.models import ApiKey
from apps.keys.selectors import api_key_get_by_hash
from apps.keys.services import api_key_issue
from apps.projects.models import Project, ProjectMembership
from apps.tenants.models import AdminToken, Membership
from apps.tenants.services import admin_token_issue
from tests.api.api_support import token_client, user_client

# Every management API route: (method, path template, who may call it).
#   read: any member (viewer+);  write: admin+;  owner: owners (admin tokens act as admin
#   at most, so never here);  staff: staff only.
# {key}, {token}, {member}, {statement}… are filled with acme's objects.
ROUTES = [
    ("GET", "/api/v1/keys", "read"),
    ("POST", "/api/v1/keys", "write"),
    ("GET", "/api/v1/keys/{key}", "read"),
    ("PATCH", "/api/v1/keys/{key}", "write"),
    ("POST", "/api/v1/keys/{key}/rotate", "write"),
    ("POST", "/api/v1/keys/{key}/revoke", "write"),
    ("GET", "/api/v1/projects", "read"),
    ("POST", "/api/v1/projects", "write"),
    ("GET", "/api/v1/projects/{project}", "read"),
    ("PATCH", "/api/v1/projects/{project}", "write"),
    # The project has an active key: a DELETE is refused (400) and the project stays.
    ("DELETE", "/api/v1/projects/{project}", "write"),
    ("GET", "/api/v1/projects/{project}/members", "write"),
    ("POST", "/api/v1/projects/{project}/members", "write"),
    ("PATCH", "/api/v1/projects/{project}/members/{pmember}", "write"),
    # DELETE …/members/{pmember} would remove what the next callers need:
    # tests/projects/test_projects_api.py and the URL walk cover it.
    ("GET", "/api/v1/projects/{project}/keys", "read"),
    ("POST", "/api/v1/projects/{project}/keys", "write"),
    ("GET", "/api/v1/admin-tokens", "read"),
    ("POST", "/api/v1/admin-tokens", "owner"),
    ("POST", "/api/v1/admin-tokens/{token}/revoke", "owner"),
    ("GET", "/api/v1/members", "owner"),
    ("POST", "/api/v1/members", "owner"),
    ("GET", "/api/v1/members/{member}", "owner"),
    ("PATCH", "/api/v1/members/{member}", "owner"),
    ("DELETE", "/api/v1/members/{member}", "owner"),
    ("GET", "/api/v1/audit-events", "owner"),
    ("GET", "/api/v1/tenant", "read"),
    ("PATCH", "/api/v1/tenant", "write"),
    ("GET", "/api/v1/balance", "read"),
    ("GET", "/api/v1/balance/entries", "read"),
    ("GET", "/api/v1/balance/entries.csv", "read"),
    ("POST", "/api/v1/balance/top-ups", "owner"),
    ("GET", "/api/v1/balance/auto-recharge", "read"),
    ("PUT", "/api/v1/balance/auto-recharge", "owner"),
    ("GET", "/api/v1/organization/usage/completions", "read"),
    ("GET", "/api/v1/organization/costs", "read"),
    ("GET", "/api/v1/usage/records.csv", "read"),
    ("GET", "/api/v1/usage/rollups.csv", "read"),
    ("GET", "/api/v1/statements", "read"),
    ("GET", "/api/v1/statements/{statement}", "read"),
    ("GET", "/api/v1/alerts/settings", "read"),
    ("PATCH", "/api/v1/alerts/settings", "write"),
    ("GET", "/api/v1/alerts/events", "read"),
    ("GET", "/api/v1/webhooks", "read"),
    ("POST", "/api/v1/webhooks", "write"),
    ("GET", "/api/v1/webhooks/{endpoint}", "read"),
    ("PATCH", "/api/v1/webhooks/{endpoint}", "write"),
    # DELETE /api/v1/webhooks/{endpoint} would remove the object the next callers need:
    # the URL walk (tests/dashboard/test_url_walk.py) and tests/alerts cover it.
    ("POST", "/api/v1/webhooks/{endpoint}/rotate-secret", "write"),
    ("POST", "/api/v1/webhooks/{endpoint}/test", "write"),
    ("GET", "/api/v1/webhooks/{endpoint}/deliveries", "read"),
    ("GET", "/api/v1/staff/tenants", "staff"),
    ("POST", "/api/v1/staff/tenants", "staff"),
    ("GET", "/api/v1/staff/tenants/{tenant}", "staff"),
    ("PATCH", "/api/v1/staff/tenants/{tenant}", "staff"),
    ("GET", "/api/v1/staff/tenants/{tenant}/rate-cards", "staff"),
    ("POST", "/api/v1/staff/tenants/{tenant}/rate-cards", "staff"),
    ("GET", "/api/v1/staff/tenants/{tenant}/rate-cards/{card}", "staff"),
    ("POST", "/api/v1/staff/tenants/{tenant}/grants", "staff"),
    ("GET", "/api/v1/staff/backends", "staff"),
    ("POST", "/api/v1/staff/backends", "staff"),
    ("GET", "/api/v1/staff/backends/{backend}", "staff"),
    ("PATCH", "/api/v1/staff/backends/{backend}", "staff"),
    ("DELETE", "/api/v1/staff/backends/{backend}", "staff"),
    ("GET", "/api/v1/staff/models", "staff"),
    ("POST", "/api/v1/staff/models", "staff"),
    ("GET", "/api/v1/staff/models/{model}", "staff"),
    ("PATCH", "/api/v1/staff/models/{model}", "staff"),
    ("GET", "/api/v1/staff/deployments", "staff"),
    ("POST", "/api/v1/staff/deployments", "staff"),
    ("GET", "/api/v1/staff/deployments/{deployment}", "staff"),
    ("PATCH", "/api/v1/staff/deployments/{deployment}", "staff"),
    ("DELETE", "/api/v1/staff/deployments/{deployment}", "staff"),
    ("GET", "/api/v1/staff/prices", "staff"),
    ("POST", "/api/v1/staff/prices", "staff"),
    ("GET", "/api/v1/staff/prices/{price}", "staff"),
    ("GET", "/api/v1/staff/pipeline", "staff"),
]
PUBLIC = {"/api/schema/", "/api/docs/"}
REPORT_PARAMS = {"start_time": 1767225600, "end_time": 1767312000}


def _api_patterns(resolver=None, prefix: str = "") -> list[str]:
    """Every URL pattern under /api/ as a template ("/api/v1/keys/{key_id}")."""
    found = []
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += _api_patterns(entry, route)
        elif isinstance(entry, URLPattern) and route.startswith("api/"):
            found.append("/" + route.replace("<int:", "{").replace(">", "}"))
    return found


def _normalise(template: str) -> str:
    import re

    return re.sub(r"\{[a-z_]+\}", "{}", template)


def test_the_route_table_covers_every_api_url_pattern():
    listed = {_normalise(path) for _, path, _ in ROUTES} | PUBLIC
    actual = {_normalise(p) for p in _api_patterns()}
    assert actual == listed


@pytest.fixture
def objects(org):
    from apps.billing.models import RateCard, Statement

    statement = Statement.objects.create(
        tenant=org.acme,
        period_start=datetime(2026, 1, 1, tzinfo=UTC).date(),
        period_end=datetime(2026, 2, 1, tzinfo=UTC).date(),
    )
    # Spares, so that the walk's own writes (revoke, remove) do not lock its callers out.
    spare_token, _ = admin_token_issue(tenant=org.acme, name="spare")
    spare_user = User.objects.create_user("spare", "spare@example.com")
    spare_member = Membership.objects.create(user=spare_user, tenant=org.acme, role="viewer")
    endpoint = WebhookEndpoint.objects.create(
        tenant=org.acme, url="https://93.184.216.34/hook", secret_encrypted="x", event_types=["*"]
    )
    project = Project.objects.create(tenant=org.acme, name="spare-project")
    api_key_issue(tenant=org.acme, name="in-spare-project", project=project)
    project_user = User.objects.create_user("spare-p", "spare-p@example.com")
    Membership.objects.create(user=project_user, tenant=org.acme, role="viewer")
    project_member = ProjectMembership.objects.create(project=project, user=project_user)
    return {
        "project": project.id,
        "pmember": project_member.id,
        "endpoint": endpoint.id,
        "key": org.acme_key.id,
        "token": spare_token.id,
        "member": spare_member.id,
        "statement": statement.id,
        "tenant": org.acme.id,
        "backend": Backend.objects.get(name="fake").id,
        "model": Model.objects.get(name="test-model").id,
        "deployment": Deployment.objects.first().id,
        "price": Price.objects.first().id,
        "card": RateCard.objects.create(
            tenant=org.acme, effective_from=datetime(2026, 1, 1, tzinfo=UTC)
        ).id,
    }


def _call(client, method: str, template: str, objects: dict, **params):
    path = template.format(**objects)
    query = {**(REPORT_PARAMS if "organization" in path or ".csv" in path else {}), **params}
    if method == "GET":
        return client.get(path, query)
    url = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return getattr(client, method.lower())(url, {}, format="json")


def _callers(org) -> dict:
    return {
        "acme-token": token_client(org.acme_token),
        "owner": user_client(org.owner),
        "admin": user_client(org.admin),
        "viewer": user_client(org.viewer),
    }


ROLE_OF = {"acme-token": "admin", "owner": "owner", "admin": "admin", "viewer": "viewer"}
RANK = {"viewer": 1, "admin": 2, "owner": 3}
NEEDS = {"read": "viewer", "write": "admin", "owner": "owner"}


def test_every_route_by_role_of_the_tenant(org, objects):
    """Allowed → not 401/403/404 (a valid empty body may be a 400); not allowed → 403."""
    for caller, client in _callers(org).items():
        for method, template, who in ROUTES:
            response = _call(client, method, template, objects)
            if who == "staff":
                assert response.status_code == 403, (caller, method, template)
                continue
            allowed = RANK[ROLE_OF[caller]] >= RANK[NEEDS[who]]
            if allowed:
                assert response.status_code not in (401, 403, 404, 500), (
                    caller,
                    method,
                    template,
                    response.status_code,
                    response.content[:300],
                )
            else:
                assert response.status_code == 403, (caller, method, template, response.content)


def test_another_tenants_objects_are_404(org, objects):
    """globex's admin token and globex's owner: every acme object is a 404, and naming
    acme is a 404 — never a 403 that would confirm it exists."""
    for client in (token_client(org.globex_token), user_client(org.outsider)):
        for method, template, who in ROUTES:
            if who == "staff":
                continue
            response = _call(client, method, template, objects, tenant="acme")
            assert response.status_code == 404, (method, template, response.status_code)
            if "{" in template and who != "owner":
                response = _call(client, method, template, objects)
                assert response.status_code in (404, 400), (method, template, response.content)
                assert response.status_code == 404 or method != "GET"
        # Their own lists never show acme's objects.
        keys = client.get("/api/v1/keys").json()
        assert [k["id"] for k in keys] == [org.globex_key.id]
    # The objects are untouched.
    org.acme_key.refresh_from_db()
    assert org.acme_key.revoked_at is None
    assert AdminToken.objects.get(id=objects["token"]).revoked_at is None
    assert Membership.objects.filter(id=objects["member"]).exists()


def test_object_routes_of_another_tenant_are_404_even_with_a_valid_body(org, objects):
    client = token_client(org.globex_token)
    key = objects["key"]
    assert client.patch(f"/api/v1/keys/{key}", {"rpm": 5}, format="json").status_code == 404
    assert client.post(f"/api/v1/keys/{key}/rotate").status_code == 404
    assert client.post(f"/api/v1/keys/{key}/revoke").status_code == 404
    # A token may not revoke tokens at all: refused before any lookup, as a missing id is.
    assert client.post(f"/api/v1/admin-tokens/{objects['token']}/revoke").status_code == 403
    assert client.post("/api/v1/admin-tokens/987654321/revoke").status_code == 403
    revoke = f"/api/v1/admin-tokens/{objects['token']}/revoke"
    assert user_client(org.outsider).post(revoke).status_code == 404
    outsider = user_client(org.outsider)
    member = objects["member"]
    assert (
        outsider.patch(f"/api/v1/members/{member}", {"role": "admin"}, format="json").status_code
        == 404
    )
    assert outsider.delete(f"/api/v1/members/{member}").status_code == 404
    assert ApiKey.objects.get(id=key).rpm is None


def test_staff_reach_every_tenant_and_the_staff_routes(org, objects):
    staff = user_client(org.staff)
    assert staff.get("/api/v1/keys").status_code == 400  # which tenant?
    assert staff.get("/api/v1/keys", {"tenant": "globex"}).json()[0]["id"] == org.globex_key.id
    assert staff.get("/api/v1/members", {"tenant": "acme"}).status_code == 200
    assert staff.get("/api/v1/keys", {"tenant": "nope"}).status_code == 404
    for method, template, who in ROUTES:
        if who == "staff" and method == "GET":
            response = _call(staff, method, template, objects)
            assert response.status_code == 200, (template, response.content)


def test_anonymous_and_inference_keys_are_refused(org, objects):
    from rest_framework.test import APIClient

    for method, template, _who in ROUTES:
        assert _call(APIClient(), method, template, objects).status_code in (401, 403)
    secret_like = token_client("tg-" + "x" * 40)
    assert secret_like.get("/api/v1/keys").status_code == 401
    assert token_client("tga-not-a-token").get("/api/v1/keys").status_code == 401


# Keys --------------------------------------------------------------------------------------


def test_key_lifecycle_secret_once_rotate_revoke(org):
    client = token_client(org.acme_token)
    response = client.post(
        "/api/v1/keys",
        {
            "name": "ci",
            "allowed_models": ["test-model"],
            "rpm": 60,
            "budget_amount": "5.00",
            "budget_period": "daily",
            "content_policy": {"hate": {"prompt": "block"}},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert response["Cache-Control"] == "no-store"
    secret = created["secret"]
    assert secret.startswith("tg-") and created["prefix"] == secret[:10]
    key = ApiKey.objects.get(id=created["id"])
    assert key.key_hash == secret_hash(secret) and secret not in str(vars(key))
    assert created["status"] == "active" and created["budget_amount"] == "5.000000"
    assert created["content_policy"]["hate"]["prompt"] == "block"
    # Never again: not in the list, not in the detail.
    listed = client.get("/api/v1/keys").json()
    assert all("secret" not in k for k in listed) and secret not in str(listed)
    assert "secret" not in client.get(f"/api/v1/keys/{key.id}").json()

    patched = client.patch(
        f"/api/v1/keys/{key.id}",
        {"allowed_models": ["*"], "tpm": 1000, "content_policy": {}},
        format="json",
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["allowed_models"] == ["*"] and patched.json()["tpm"] == 1000
    assert patched.json()["content_policy"] == {}

    rotated = client.post(f"/api/v1/keys/{key.id}/rotate")
    assert rotated.status_code == 201
    assert rotated["Cache-Control"] == "no-store"
    new = rotated.json()
    assert new["id"] == key.id and new["name"] == "ci" and new["secret"] != secret
    assert new["tpm"] == 1000 and new["allowed_models"] == ["*"]
    assert new["previous_secret_valid_until"] is None  # no grace: the old one is refused
    assert api_key_get_by_hash(secret_hash(secret)) is None

    revoked = client.post(f"/api/v1/keys/{key.id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert client.post(f"/api/v1/keys/{key.id}/rotate").status_code == 400  # revoked
    assert client.get("/api/v1/keys", {"status": "active"}).json()[0]["id"] == org.acme_key.id


def test_key_input_errors_are_400_with_field_errors(org):
    client = token_client(org.acme_token)
    cases = [
        ({}, "name"),
        ({"name": "x", "allowed_models": ["nope"]}, "allowed_models"),
        ({"name": "x", "rpm": -1}, "rpm"),
        ({"name": "x", "rpm": 2**40}, "rpm"),
        ({"name": "x", "budget_amount": "1e30"}, "budget_amount"),
        ({"name": "x", "budget_period": "weekly"}, "budget_period"),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "content_policy": {"hate": {"prompt": "zap"}}}, "content_policy"),
        ({"name": "x", "content_policy": "off"}, "content_policy"),
        ({"name": "x", "colour": "blue"}, "colour"),
        ({"name": "main"}, "name"),  # an active key has it
        ({"name": "a\x00b"}, "name"),
        ({"name": "x", "allowed_models": "test-model"}, "allowed_models"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/keys", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in response.json(), (body, response.json())
    assert client.post("/api/v1/keys", "[1,", content_type="application/json").status_code == 400
    assert ApiKey.objects.filter(tenant=org.acme).count() == 1


def test_key_expiry_shows_in_status(org):
    client = token_client(org.acme_token)
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = client.post("/api/v1/keys", {"name": "tmp", "expires_at": soon}, format="json").json()
    assert key["status"] == "active" and key["expires_at"]
    ApiKey.objects.filter(id=key["id"]).update(expires_at=datetime.now(UTC) - timedelta(1))
    assert client.get(f"/api/v1/keys/{key['id']}").json()["status"] == "expired"
    assert [k["id"] for k in client.get("/api/v1/keys", {"status": "expired"}).json()] == [
        key["id"]
    ]
    assert client.get("/api/v1/keys", {"status": "bogus"}).status_code == 400


# Admin tokens ------------------------------------------------------------------------------


def test_admin_tokens_issue_list_revoke(org):
    client = user_client(org.owner)
    issued = client.post("/api/v1/admin-tokens", {"name": "ci"}, format="json")
    assert issued.status_code == 201
    secret = issued.json()["secret"]
    assert secret.startswith("tga-")
    assert token_client(secret).get("/api/v1/keys").status_code == 200
    names = [t["name"] for t in client.get("/api/v1/admin-tokens").json()]
    assert sorted(names) == ["ci", "ops"]
    assert secret not in str(client.get("/api/v1/admin-tokens").json())
    assert client.post("/api/v1/admin-tokens", {"name": "ci"}, format="json").status_code == 400
    token_id = issued.json()["id"]
    assert client.post(f"/api/v1/admin-tokens/{token_id}/revoke").json()["status"] == "revoked"
    assert token_client(secret).get("/api/v1/keys").status_code == 401
    assert AdminToken.objects.get(id=token_id).revoked_at is not None


# Members -----------------------------------------------------------------------------------


def test_owner_invites_changes_roles_and_removes(org):
    client = user_client(org.owner)
    invited = client.post(
        "/api/v1/members", {"email": "New.Person@example.com", "role": "viewer"}, format="json"
    )
    assert invited.status_code == 201, invited.content
    body = invited.json()
    assert body["user_created"] is True and body["role"] == "viewer"
    assert body["set_password_path"].startswith("/accounts/reset/")
    again = client.post(
        "/api/v1/members", {"email": "new.person@example.com", "role": "admin"}, format="json"
    )
    assert again.status_code == 400 and "email" in again.json()
    # An existing user with a password: no link.
    existing = client.post(
        "/api/v1/members", {"email": "gus@example.com", "role": "admin"}, format="json"
    ).json()
    assert existing["user_created"] is False and existing["set_password_path"] is None

    emails = {m["email"] for m in client.get("/api/v1/members").json()}
    assert {"olivia@example.com", "new.person@example.com", "gus@example.com"} <= emails
    member_id = body["id"]
    changed = client.patch(f"/api/v1/members/{member_id}", {"role": "admin"}, format="json")
    assert changed.status_code == 200 and changed.json()["role"] == "admin"
    assert (
        client.patch(f"/api/v1/members/{member_id}", {"role": "god"}, format="json").status_code
        == 400
    )
    assert client.delete(f"/api/v1/members/{member_id}").status_code == 204
    assert client.get(f"/api/v1/members/{member_id}").status_code == 404


def test_the_last_owner_can_be_neither_demoted_nor_removed(org):
    client = user_client(org.owner)
    own = Membership.objects.get(user=org.owner).id
    response = client.patch(f"/api/v1/members/{own}", {"role": "admin"}, format="json")
    assert response.status_code == 400 and "role" in response.json()
    assert client.delete(f"/api/v1/members/{own}").status_code == 400
    # With a second owner, the first may step down.
    admin = Membership.objects.get(user=org.admin).id
    assert (
        client.patch(f"/api/v1/members/{admin}", {"role": "owner"}, format="json").status_code
        == 200
    )
    assert (
        client.patch(f"/api/v1/members/{own}", {"role": "viewer"}, format="json").status_code == 200
    )
    assert Membership.objects.get(id=own).role == "viewer"


def test_admin_and_viewer_and_admin_tokens_cannot_manage_members(org):
    member = Membership.objects.get(user=org.viewer).id
    for client in (user_client(org.admin), user_client(org.viewer), token_client(org.acme_token)):
        assert client.get("/api/v1/members").status_code == 403
        assert (
            client.post(
                "/api/v1/members", {"email": "x@example.com", "role": "owner"}, format="json"
            ).status_code
            == 403
        )
        assert client.delete(f"/api/v1/members/{member}").status_code == 403
        assert client.get("/api/v1/audit-events").status_code == 403


# Tenant settings ---------------------------------------------------------------------------


def test_tenant_settings_read_by_viewers_written_by_admins(org):
    viewer = user_client(org.viewer)
    settings = viewer.get("/api/v1/tenant").json()
    assert settings["name"] == "acme" and settings["role"] == "viewer"
    assert viewer.patch("/api/v1/tenant", {"rpm": 10}, format="json").status_code == 403
    admin = user_client(org.admin)
    response = admin.patch(
        "/api/v1/tenant",
        {"rpm": 10, "budget_amount": "100", "content_policy": {"violence": {"prompt": "block"}}},
        format="json",
    )
    assert response.status_code == 200, response.content
    org.acme.refresh_from_db()
    assert org.acme.rpm == 10 and str(org.acme.budget_amount) == "100.000000"
    assert org.acme.content_policy["violence"]["prompt"] == "block"
    bad = admin.patch("/api/v1/tenant", {"rpm": "many", "name": "x"}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"name"}


# Audit log ---------------------------------------------------------------------------------


def test_audit_events_filter_by_action_and_time_and_paginate(org):
    token = token_client(org.acme_token)
    for i in range(3):
        token.post("/api/v1/keys", {"name": f"k{i}"}, format="json")
    owner = user_client(org.owner)
    page = owner.get("/api/v1/audit-events", {"action": "key.issued", "limit": 2}).json()
    assert [e["action"] for e in page["results"]] == ["key.issued", "key.issued"]
    assert page["results"][0]["target_label"].startswith("acme/k2")
    assert page["results"][0]["actor"].startswith("admin-token ops")
    assert page["results"][0]["actor_type"] == "admin_token"
    rest = owner.get(page["next"]).json()
    # acme's "main" key was issued by config as code (system), then k0.
    assert [e["details"]["name"] for e in rest["results"]][:1] == ["k0"]
    everything = owner.get("/api/v1/audit-events", {"action": "key."}).json()["results"]
    assert {e["action"] for e in everything} == {"key.issued"}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert owner.get("/api/v1/audit-events", {"since": future}).json()["results"] == []
    assert owner.get("/api/v1/audit-events", {"until": "nonsense"}).status_code == 400
    # Only acme's events; globex's owner sees only globex's.
    assert all(
        e["action"] != "key.issued" or not e["target_label"].startswith("globex")
        for e in everything
    )
    theirs = user_client(org.outsider).get("/api/v1/audit-events").json()["results"]
    assert {e["target_label"].split("/")[0] for e in theirs if e["target_type"] == "api_key"} == {
        "globex"
    }
    assert AuditEvent.objects.filter(tenant=org.acme, action="key.issued").count() == 4


# Staff -------------------------------------------------------------------------------------


def test_staff_manage_tenants(org):
    staff = user_client(org.staff)
    created = staff.post("/api/v1/staff/tenants", {"name": "initech", "rpm": 100}, format="json")
    assert created.status_code == 201, created.content
    tenant_id = created.json()["id"]
    assert (
        staff.post("/api/v1/staff/tenants", {"name": "initech"}, format="json").status_code == 400
    )
    assert staff.post("/api/v1/staff/tenants", {"name": "a b"}, format="json").status_code == 400
    patched = staff.patch(
        f"/api/v1/staff/tenants/{tenant_id}", {"display_name": "Initech", "tpm": 5}, format="json"
    )
    assert patched.json()["display_name"] == "Initech" and patched.json()["tpm"] == 5
    assert (
        staff.patch(
            f"/api/v1/staff/tenants/{tenant_id}", {"name": "renamed"}, format="json"
        ).status_code
        == 400
    )
    assert "initech" in [t["name"] for t in staff.get("/api/v1/staff/tenants").json()]


def test_staff_catalog_backend_credential_is_write_only(org):
    staff = user_client(org.staff)
    created = staff.post(
        "/api/v1/staff/backends",
        {
            "name": "vllm",
            "base_url": "http://127.0.0.1:9000/v1/",
            "credential": "sk-upstream-very-secret",
            "extra_headers": {"X-Org": "acme"},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert "credential" not in body and body["has_credential"] is True
    assert body["base_url"] == "http://127.0.0.1:9000/v1"
    backend = Backend.objects.get(name="vllm")
    assert backend.credential == "sk-upstream-very-secret"
    assert "sk-upstream-very-secret" not in backend.credential_encrypted
    listed = staff.get("/api/v1/staff/backends").content.decode()
    assert "sk-upstream" not in listed
    assert "sk-upstream" not in str(list(AuditEvent.objects.values("details")))
    bad_headers = staff.patch(
        f"/api/v1/staff/backends/{backend.id}",
        {"extra_headers": {"bad header": "x"}},
        format="json",
    )
    assert bad_headers.status_code == 400 and "extra_headers" in bad_headers.json()
    for bad in ({"timeout_s": "NaN"}, {"timeout_s": 0}, {"base_url": "ftp://x"}, {"kind": "x"}):
        response = staff.patch(f"/api/v1/staff/backends/{backend.id}", bad, format="json")
        assert response.status_code == 400, (bad, response.content)
    cleared = staff.patch(f"/api/v1/staff/backends/{backend.id}", {"credential": ""}, format="json")
    assert cleared.json()["has_credential"] is False
    # A backend in use cannot be deleted (409); a free one can.
    fake = Backend.objects.get(name="fake")
    assert staff.delete(f"/api/v1/staff/backends/{fake.id}").status_code == 409
    assert staff.delete(f"/api/v1/staff/backends/{backend.id}").status_code == 204


def test_staff_sets_that_a_backend_reports_stop_sequences(org):
    staff = user_client(org.staff)
    backend = Backend.objects.get(name="fake")
    response = staff.patch(
        f"/api/v1/staff/backends/{backend.id}", {"reports_stop_sequence": True}, format="json"
    )
    assert response.json()["reports_stop_sequence"] is True


def test_staff_catalog_models_deployments_and_append_only_prices(org):
    staff = user_client(org.staff)
    model = staff.post(
        "/api/v1/staff/models", {"name": "llama-3", "aliases": ["llama"]}, format="json"
    )
    assert model.status_code == 201, model.content
    assert (
        staff.post("/api/v1/staff/models", {"name": "llama"}, format="json").status_code == 400
    )  # an alias of another model
    assert staff.post("/api/v1/staff/models", {"name": "llama-3"}, format="json").status_code == 400
    deployment = staff.post(
        "/api/v1/staff/deployments",
        {"model": "llama-3", "backend": "fake", "upstream_model": "meta/llama-3", "weight": 3},
        format="json",
    )
    assert deployment.status_code == 201, deployment.content
    assert deployment.json()["model"] == "llama-3" and deployment.json()["backend"] == "fake"
    dup = staff.post(
        "/api/v1/staff/deployments",
        {"model": "llama-3", "backend": "fake", "upstream_model": "meta/llama-3"},
        format="json",
    )
    assert dup.status_code == 400
    unknown = staff.post(
        "/api/v1/staff/deployments",
        {"model": "nope", "backend": "fake", "upstream_model": "x"},
        format="json",
    )
    assert unknown.status_code == 400 and "model" in unknown.json()
    listed = staff.get("/api/v1/staff/deployments", {"model": "llama-3"}).json()
    assert [d["upstream_model"] for d in listed] == ["meta/llama-3"]
    price = {
        "model": "llama-3",
        "effective_from": "2026-03-01T00:00:00Z",
        "input_per_mtok": "0.10",
        "output_per_mtok": "0.40",
    }
    created = staff.post("/api/v1/staff/prices", price, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["cached_input_per_mtok"] is None  # follows the input rate
    assert staff.post("/api/v1/staff/prices", price, format="json").status_code == 400
    price_id = created.json()["id"]
    assert staff.patch(f"/api/v1/staff/prices/{price_id}", {}, format="json").status_code == 405
    assert staff.delete(f"/api/v1/staff/prices/{price_id}").status_code == 405
    assert staff.delete(f"/api/v1/staff/deployments/{deployment.json()['id']}").status_code == 204
    actions = set(AuditEvent.objects.filter(tenant=None).values_list("action", flat=True))
    assert {"model.created", "deployment.created", "price.created", "deployment.deleted"} <= actions


def test_staff_set_a_models_budget_bounds(org):
    staff = user_client(org.staff)
    created = staff.post(
        "/api/v1/staff/models", {"name": "qwen-vl", "image_token_bound": 16384}, format="json"
    )
    assert created.json()["image_token_bound"] == 16384


def test_a_models_maximum_output_must_be_positive(org):
    staff = user_client(org.staff)
    refused = staff.post(
        "/api/v1/staff/models", {"name": "qwen-vl", "max_output_tokens": 0}, format="json"
    )
    assert "max_output_tokens" in refused.json()


def test_staff_pipeline_state(org, clean_stream):
    body = user_client(org.staff).get("/api/v1/staff/pipeline").json()
    assert set(body) == {
        "stream_length",
        "pending",
        "lag_seconds",
        "dead_letters",
        "last_ingest_at",
        "beat_last_tick_at",
        "ingest",
        "beat",
    }
    assert body["lag_seconds"] == 0.0 and body["last_ingest_at"] is None
