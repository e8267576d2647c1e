"""The audit log records who did what, when, to which object — for every key, admin
token, policy, membership and tenant change — and never a secret."""

from datetime import UTC, datetime, timedelta

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_event_list
from apps.audit.services import audit_record
from apps.keys.models import ApiKey
from apps.keys.services import api_key_issue, api_key_revoke, api_key_rotate, api_key_update
from apps.moderation.services import content_policy_set
from apps.tenants.access import TenantAccess
from apps.tenants.models import Membership
from apps.tenants.services import (
    admin_token_issue,
    admin_token_revoke,
    membership_invite,
    membership_remove,
    membership_set_role,
    tenant_update_limits,
)
from tests.api.api_support import token_client, user_client


def events(tenant, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, action=action).order_by("id"))


def test_key_issue_rotate_revoke_update_record_who_what_when(org):
    before = datetime.now(UTC)
    api_key, secret = api_key_issue(
        tenant=org.acme, name="ci", allowed_models=["test-model"], rpm=5, actor=org.admin
    )
    [issued] = events(org.acme, "key.issued")[-1:]
    assert issued.actor_user == org.admin and issued.actor_label == "adam@example.com"
    assert (issued.target_type, issued.target_id) == ("api_key", str(api_key.id))
    assert issued.details["allowed_models"] == ["test-model"] and issued.details["rpm"] == 5
    assert before <= issued.created_at <= datetime.now(UTC)
    assert api_key.created_by == org.admin

    api_key_update(api_key=api_key, rpm=10, allowed_models=["*"], actor=org.owner)
    [updated] = events(org.acme, "key.updated")
    assert updated.details == {
        "changes": {
            "rpm": {"from": 5, "to": 10},
            "allowed_models": {"from": ["test-model"], "to": ["*"]},
        }
    }
    api_key_update(api_key=api_key, rpm=10, actor=org.owner)  # no change, no event
    assert len(events(org.acme, "key.updated")) == 1

    old_hash, old_prefix = api_key.key_hash, api_key.prefix
    new_key, new_secret = api_key_rotate(api_key=api_key, grace_seconds=3600, actor=org.owner)
    [rotated] = events(org.acme, "key.rotated")
    assert rotated.actor_user == org.owner and rotated.target_id == str(api_key.id)
    assert rotated.details["previous_prefix"] == old_prefix
    assert rotated.details["new_prefix"] == new_key.prefix
    assert rotated.details["grace_seconds"] == 3600
    assert rotated.details["previous_secret_valid_until"] is not None
    # Rotation is one event, not a revoke plus an issue.
    assert len(events(org.acme, "key.revoked")) == 0
    assert len(events(org.acme, "key.issued")) == 2  # config as code's "main", then "ci"

    api_key_revoke(api_key=new_key, actor=org.owner)
    api_key_revoke(api_key=new_key, actor=org.owner)  # already revoked: no second event
    [revoked] = events(org.acme, "key.revoked")
    assert revoked.target_id == str(new_key.id)

    every = AuditEvent.objects.filter(tenant=org.acme)
    text = str(list(every.values()))
    for secret_value in (secret, new_secret, old_hash, new_key.key_hash):
        assert secret_value not in text


def test_api_actions_are_recorded_with_the_admin_token_or_user(org):
    token = token_client(org.acme_token)
    key_id = token.post("/api/v1/keys", {"name": "ci"}, format="json").json()["id"]
    token.patch(
        f"/api/v1/keys/{key_id}", {"content_policy": {"hate": {"prompt": "block"}}}, format="json"
    )
    user_client(org.admin).post(f"/api/v1/keys/{key_id}/revoke")
    issued = events(org.acme, "key.issued")[-1]
    assert issued.actor_token == org.acme_token_row()
    assert issued.actor_label.startswith("admin-token ops (tga-")
    [policy] = events(org.acme, "policy.changed")
    assert policy.target_type == "api_key" and policy.target_id == str(key_id)
    assert policy.details["from"] == {} and policy.details["to"]["hate"]["prompt"] == "block"
    [revoked] = events(org.acme, "key.revoked")
    assert revoked.actor_user == org.admin


def test_policy_changes_on_tenant_and_key(org):
    content_policy_set(tenant=org.acme, policy={"violence": {"prompt": "block"}}, actor=org.owner)
    content_policy_set(tenant=org.acme, policy={"violence": {"prompt": "block"}}, actor=org.owner)
    content_policy_set(api_key=org.acme_key, policy={"hate": {"completion": "annotate"}})
    tenant_event, key_event = events(org.acme, "policy.changed")
    assert tenant_event.target_type == "tenant" and tenant_event.actor_user == org.owner
    assert key_event.target_type == "api_key" and key_event.actor_label == "system"
    assert key_event.details["to"]["hate"]["completion"] == "annotate"


def test_membership_changes_are_recorded(org):
    invitation = membership_invite(
        tenant=org.acme, email="new@example.com", role="viewer", actor=org.owner
    )
    membership_set_role(membership=invitation.membership, role="admin", actor=org.owner)
    membership_remove(membership=invitation.membership, actor=org.owner)
    [invited] = events(org.acme, "member.invited")
    assert invited.details == {"email": "new@example.com", "role": "viewer", "new_user": True}
    [changed] = events(org.acme, "member.role_changed")
    assert changed.details == {"user": "new@example.com", "from": "viewer", "to": "admin"}
    [removed] = events(org.acme, "member.removed")
    assert removed.details == {"user": "new@example.com", "role": "admin"}
    assert all(e.actor_user == org.owner for e in (invited, changed, removed))
    # The link's token is not in the log.
    token = invitation.set_password_path.rstrip("/").rsplit("/", 1)[-1]
    assert token not in str(list(AuditEvent.objects.values("details")))


def test_admin_token_and_limit_changes_are_recorded(org):
    token, secret = admin_token_issue(tenant=org.acme, name="ci", actor=org.owner)
    admin_token_revoke(admin_token=token, actor=org.owner)
    [issued] = events(org.acme, "admin_token.issued")[-1:]
    [revoked] = events(org.acme, "admin_token.revoked")
    assert issued.target_id == revoked.target_id == str(token.id)
    assert secret not in str(issued.details)
    tenant_update_limits(tenant=org.acme, rpm=100, budget_amount=None, actor=org.owner)
    [limits] = events(org.acme, "tenant.limits_changed")
    assert limits.details == {"changes": {"rpm": {"from": None, "to": 100}}}


def test_actor_may_be_a_tenant_access_and_secrets_are_redacted(org):
    access = TenantAccess(tenant=org.acme, role="admin", user=None, token=org.acme_token_row())
    event = audit_record(
        tenant=org.acme,
        actor=access,
        action="test.action",
        target=org.acme_key,
        details={"secret": "tg-abc", "nested": [{"password": "x", "ok": 1}], "Token": "t"},
    )
    event.refresh_from_db()
    assert event.actor_token == org.acme_token_row()
    assert event.details == {
        "secret": "[redacted]",
        "nested": [{"password": "[redacted]", "ok": 1}],
        "Token": "[redacted]",
    }


def test_event_survives_its_actor_and_is_scoped_to_its_tenant(org):
    api_key_issue(tenant=org.globex, name="g2", actor=org.outsider)
    org.outsider.delete()
    event = events(org.globex, "key.issued")[-1]
    assert event.actor_user is None and event.actor_label == "gus@example.com"
    assert all(e.tenant == org.acme for e in audit_event_list(tenant=org.acme))
    assert not audit_event_list(tenant=org.acme, action="key.issued").filter(
        target_label__startswith="globex"
    )
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert not audit_event_list(tenant=org.globex, since=later).exists()
    assert Membership.objects.filter(tenant=org.globex).count() == 0
    assert ApiKey.objects.filter(tenant=org.globex).count() == 2
