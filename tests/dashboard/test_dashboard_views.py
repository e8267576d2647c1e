"""Dashboard pages through Django's test client: roles, one-time secrets, the audit trail."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.keys.hashing import secret_hash
from apps.keys.models import ApiKey
from apps.tenants.models import Membership
from tests.dashboard.conftest import PASSWORD

SECRET = re.compile(r'value="(tg-[A-Za-z0-9_\-]+)"')


@pytest.fixture
def as_user(client):
    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in


def test_sign_in_page_and_redirects(client, team):
    assert client.get("/dashboard/keys/").status_code == 302
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    signed = client.post(
        "/accounts/login/", {"username": "olivia", "password": PASSWORD}, follow=True
    )
    assert signed.redirect_chain[-1][0] == "/dashboard/keys/"
    assert b"main" in signed.content and b"restricted" in signed.content


def test_issue_key_shows_secret_once_and_stores_only_its_hash(as_user, team):
    client = as_user(team.owner)
    response = client.post(
        reverse("dashboard:key-create"),
        {
            "name": "ci",
            "allowed_models": ["test-model"],
            "rpm": "60",
            "budget_amount": "12.5",
            "budget_period": "monthly",
        },
        follow=True,
    )
    assert response.status_code == 200
    secret = SECRET.search(response.content.decode()).group(1)
    key = ApiKey.objects.get(tenant=team.acme, name="ci", revoked_at__isnull=True)
    assert key.key_hash == secret_hash(secret)
    assert key.allowed_models == ["test-model"] and key.rpm == 60
    assert key.budget_amount == Decimal("12.5") and key.created_by == team.owner
    assert "no-store" in response["Cache-Control"]
    again = client.get(reverse("dashboard:keys"))
    assert secret not in again.content.decode() and key.prefix in again.content.decode()
    issued = AuditEvent.objects.filter(tenant=team.acme, action="key.issued", actor_user=team.owner)
    assert issued.count() == 1


def test_rotate_edit_policy_and_revoke(as_user, team):
    client = as_user(team.admin)
    key = team.world.acme_key
    confirm = client.get(reverse("dashboard:key-rotate", args=[key.id]))
    assert b"confirm-rotate" in confirm.content
    rotated = client.post(reverse("dashboard:key-rotate", args=[key.id]), follow=True)
    secret = SECRET.search(rotated.content.decode()).group(1)
    new_key = ApiKey.objects.get(key_hash=secret_hash(secret))
    assert new_key.id == key.id
    assert new_key.revoked_at is None
    edit = reverse("dashboard:key-edit", args=[new_key.id])
    assert client.get(edit).status_code == 200
    saved = client.post(
        edit, {"allowed_models": ["*"], "tpm": "1000", "budget_period": "daily"}, follow=True
    )
    assert saved.status_code == 200
    new_key.refresh_from_db()
    assert new_key.allowed_models == ["*"] and new_key.tpm == 1000
    policy = {
        f"{c}__{d}": ""
        for c in ("hate", "self_harm", "sexual", "violence", "jailbreak", "profanity")
        for d in ("prompt", "completion")
    }
    policy.update(
        {
            "violence__prompt": "block",
            "violence__completion": "annotate",
            "violence__threshold": "high",
        }
    )
    for c in ("hate", "self_harm", "sexual"):
        policy[f"{c}__threshold"] = "medium"
    policy["violence__threshold"] = "high"
    response = client.post(reverse("dashboard:key-policy", args=[new_key.id]), policy)
    assert response.status_code == 302, response.content.decode()[:2000]
    new_key.refresh_from_db()
    assert new_key.content_policy == {
        "violence": {"prompt": "block", "completion": "annotate", "threshold": "high"}
    }
    confirm = client.get(reverse("dashboard:key-revoke", args=[new_key.id]))
    assert b"confirm-revoke" in confirm.content
    client.post(reverse("dashboard:key-revoke", args=[new_key.id]))
    new_key.refresh_from_db()
    assert new_key.revoked_at is not None
    actions = set(AuditEvent.objects.filter(tenant=team.acme).values_list("action", flat=True))
    assert {"key.rotated", "key.updated", "key.revoked"} <= actions


def test_viewer_reads_but_cannot_write(as_user, team):
    client = as_user(team.viewer)
    page = client.get(reverse("dashboard:keys")).content.decode()
    assert "main" in page and "New key" not in page and "Rotate" not in page
    key = team.world.acme_key
    assert client.post(reverse("dashboard:key-create"), {"name": "x"}).status_code == 403
    assert client.post(reverse("dashboard:key-revoke", args=[key.id])).status_code == 403
    assert client.post(reverse("dashboard:key-rotate", args=[key.id])).status_code == 403
    assert client.get(reverse("dashboard:usage")).status_code == 200
    assert client.get(reverse("dashboard:audit")).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and not ApiKey.objects.filter(name="x").exists()


def test_another_tenants_objects_are_404(as_user, team):
    client = as_user(team.owner)
    other = team.world.globex_key
    for name in ("key-edit", "key-revoke"):
        assert client.get(reverse(f"dashboard:{name}", args=[other.id])).status_code == 404
    assert client.post(reverse("dashboard:key-revoke", args=[other.id])).status_code == 404
    assert client.post(reverse("dashboard:key-rotate", args=[other.id])).status_code == 404
    url = reverse("dashboard:statement-detail", args=[team.other_statement.id])
    assert client.get(url).status_code == 404
    assert client.post(reverse("dashboard:switch-tenant"), {"tenant": "globex"}).status_code == 404
    other.refresh_from_db()
    assert other.revoked_at is None


def test_members_invite_link_once_roles_and_audit(as_user, team):
    client = as_user(team.owner)
    response = client.post(
        reverse("dashboard:member-invite"),
        {"email": "new@example.com", "role": "admin"},
        follow=True,
    )
    page = response.content.decode()
    link = re.search(r'value="(http://testserver/accounts/reset/[^"]+)"', page).group(1)
    assert "new@example.com" in page
    assert link not in client.get(reverse("dashboard:members")).content.decode()
    membership = Membership.objects.get(tenant=team.acme, user__email="new@example.com")
    client.post(reverse("dashboard:member-role", args=[membership.id]), {"role": "viewer"})
    membership.refresh_from_db()
    assert membership.role == "viewer"
    client.post(reverse("dashboard:member-remove", args=[membership.id]))
    assert not Membership.objects.filter(id=membership.id).exists()
    audit = client.get(reverse("dashboard:audit")).content.decode()
    for action in ("member.invited", "member.role_changed", "member.removed"):
        assert action in audit
    # The invitee sets a password through the one-time link, then signs in.
    client.logout()
    form = client.get(link, follow=True)
    assert form.status_code == 200 and b"new_password1" in form.content
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a-long-new-password-1", "new_password2": "a-long-new-password-1"},
    )
    assert done.status_code == 302
    # Admins cannot manage members.
    admin = as_user(team.admin)
    assert (
        admin.post(
            reverse("dashboard:member-invite"), {"email": "x@example.com", "role": "viewer"}
        ).status_code
        == 403
    )


def test_tenant_switcher(as_user, team):
    Membership.objects.create(user=team.owner, tenant=team.globex, role="viewer")
    client = as_user(team.owner)
    page = client.get(reverse("dashboard:keys")).content.decode()
    assert 'name="tenant"' in page and team.world.acme_key.prefix in page
    client.post(reverse("dashboard:switch-tenant"), {"tenant": "globex"})
    page = client.get(reverse("dashboard:keys")).content.decode()
    assert team.world.globex_key.prefix in page and team.world.acme_key.prefix not in page
    assert "New key" not in page  # a viewer in globex


def test_admin_tokens_page(as_user, team):
    client = as_user(team.owner)
    response = client.post(reverse("dashboard:token-create"), {"name": "deploy"}, follow=True)
    secret = re.search(r'value="(tga-[^"]+)"', response.content.decode()).group(1)
    assert secret not in client.get(reverse("dashboard:tokens")).content.decode()
    assert (
        as_user(team.viewer).post(reverse("dashboard:token-create"), {"name": "v"}).status_code
        == 403
    )


def test_staff_pages(as_user, team):
    for name in (
        "staff-tenants",
        "staff-backends",
        "staff-models",
        "staff-margins",
        "staff-rate-cards",
        "staff-pipeline",
    ):
        assert as_user(team.owner).get(reverse(f"dashboard:{name}")).status_code == 404
        page = as_user(team.staff).get(reverse(f"dashboard:{name}"))
        assert page.status_code == 200, name
    page = as_user(team.staff).get(reverse("dashboard:staff-backends")).content.decode()
    assert "fake-upstream-model" in page and "upstream-secret" not in page
    for url in (
        "/admin/keys/apikey/",
        "/admin/catalog/backend/",
        "/admin/ledger/usagerecord/",
        "/admin/tenants/tenant/",
        "/admin/catalog/price/",
        "/admin/billing/ratecard/",
        "/admin/tenants/membership/",
    ):
        team.staff.is_superuser = True
        team.staff.save()
        assert as_user(team.staff).get(url).status_code == 200, url


def test_tenant_settings_limits_and_policy(as_user, team):
    admin = as_user(team.admin)
    page = admin.get(reverse("dashboard:settings"))
    assert page.status_code == 200 and b"Content policy" in page.content
    saved = admin.post(
        reverse("dashboard:settings"),
        {"rpm": "600", "budget_amount": "25.50", "budget_period": "daily"},
    )
    assert saved.status_code == 302
    team.acme.refresh_from_db()
    assert team.acme.rpm == 600 and str(team.acme.budget_amount) == "25.500000"
    assert team.acme.budget_period == "daily" and team.acme.tpm is None
    policy = {
        f"{c}__{d}": "off"
        for c in ("hate", "self_harm", "sexual", "violence", "jailbreak", "profanity")
        for d in ("prompt", "completion")
    }
    policy.update({"jailbreak__prompt": "block", "jailbreak__completion": "annotate"})
    policy.update({f"{c}__threshold": "medium" for c in ("hate", "self_harm", "sexual")})
    policy["violence__threshold"] = "low"
    response = admin.post(reverse("dashboard:settings-policy"), policy)
    assert response.status_code == 302, response.content.decode()[:2000]
    team.acme.refresh_from_db()
    assert team.acme.content_policy == {
        "jailbreak": {"prompt": "block", "completion": "annotate", "threshold": "medium"}
    }
    # the page shows what is stored; the other tenant is untouched
    assert b'value="block" selected' in admin.get(reverse("dashboard:settings")).content
    team.globex.refresh_from_db()
    assert team.globex.content_policy in ({}, None) and team.globex.rpm != 600
    actions = set(AuditEvent.objects.filter(tenant=team.acme).values_list("action", flat=True))
    assert {"tenant.limits_changed", "policy.changed"} <= actions
    # a viewer reads the settings but cannot change them
    viewer = as_user(team.viewer)
    assert viewer.get(reverse("dashboard:settings")).status_code == 200
    assert viewer.post(reverse("dashboard:settings"), {"rpm": "1"}).status_code == 403
    assert viewer.post(reverse("dashboard:settings-policy"), policy).status_code == 403
    team.acme.refresh_from_db()
    assert team.acme.rpm == 600


def test_keys_list_pages_and_search(as_user, team):
    from apps.keys.services import api_key_issue

    for i in range(60):
        api_key_issue(tenant=team.acme, name=f"bulk-{i:02d}")
    client = as_user(team.viewer)
    first = client.get(reverse("dashboard:keys")).content.decode()
    assert "page 1 of 2" in first and "bulk-00" in first and "bulk-59" not in first
    second = client.get(reverse("dashboard:keys") + "?page=2").content.decode()
    assert "bulk-59" in second and "bulk-00" not in second
    found = client.get(reverse("dashboard:keys") + "?q=bulk-4").content.decode()
    assert found.count("data-key-prefix=") == 10 and "page 1 of" not in found
    # another tenant's keys never show, whatever the search
    assert (
        "data-key-prefix="
        not in client.get(reverse("dashboard:keys") + "?q=globex").content.decode()
    )
