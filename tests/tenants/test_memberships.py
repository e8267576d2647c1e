"""Membership services: invitations with a one-time set-password link, role changes,
and the tenant never losing its last owner."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode

from apps.tenants.models import Membership
from apps.tenants.services import (
    TenantError,
    membership_invite,
    membership_remove,
    membership_set_role,
    tenant_update_limits,
)


def test_invite_creates_a_user_without_password_and_a_one_time_link(org):
    invitation = membership_invite(
        tenant=org.acme, email="Dana@Example.com", role="admin", actor=org.owner
    )
    user = invitation.membership.user
    assert invitation.user_created and user.email == "dana@example.com"
    assert not user.has_usable_password()
    assert invitation.membership.role == "admin"
    _, _, uidb64, token, _ = (
        invitation.set_password_path.split("/", 4)[0:1]
        + (invitation.set_password_path.strip("/").split("/")[1:] + [""])[:4]
    )
    assert force_str(urlsafe_base64_decode(uidb64)) == str(user.pk)
    assert default_token_generator.check_token(user, token)
    # Setting the password uses the link up.
    user.set_password("a-long-new-password")
    user.save()
    assert not default_token_generator.check_token(user, token)


def test_the_set_password_link_works_in_the_dashboard(org, client):
    invitation = membership_invite(tenant=org.acme, email="eve@example.com", role="viewer")
    page = client.get(invitation.set_password_path, follow=True)
    assert page.status_code == 200
    form_url = page.redirect_chain[-1][0] if page.redirect_chain else invitation.set_password_path
    done = client.post(
        form_url,
        {"new_password1": "Correct-Horse-42", "new_password2": "Correct-Horse-42"},
    )
    assert done.status_code == 302
    user = get_user_model().objects.get(email="eve@example.com")
    assert user.check_password("Correct-Horse-42")


def test_invite_refuses_bad_input_and_existing_members(org):
    for email, role, field in (
        ("not-an-email", "viewer", "email"),
        ("x@example.com", "emperor", "role"),
        ("vera@example.com", "viewer", "email"),  # already a member
    ):
        with pytest.raises(TenantError) as exc:
            membership_invite(tenant=org.acme, email=email, role=role, actor=org.owner)
        assert exc.value.field == field


def test_last_owner_is_kept(org):
    owner = Membership.objects.get(user=org.owner)
    with pytest.raises(TenantError):
        membership_set_role(membership=owner, role="viewer")
    with pytest.raises(TenantError):
        membership_remove(membership=owner)
    assert Membership.objects.get(user=org.owner).role == "owner"
    admin = Membership.objects.get(user=org.admin)
    membership_set_role(membership=admin, role="owner")
    membership_remove(membership=owner)
    assert not Membership.objects.filter(user=org.owner).exists()
    with pytest.raises(TenantError):
        membership_remove(membership=Membership.objects.get(user=org.admin))


def test_tenant_limits_publish_an_invalidation_of_every_key(
    org, monkeypatch, django_capture_on_commit_callbacks
):
    published = []
    monkeypatch.setattr(
        "apps.tenants.services.publish", lambda channel, message: published.append(message)
    )
    with django_capture_on_commit_callbacks(execute=True):
        tenant_update_limits(tenant=org.acme, rpm=50, budget_period="daily", actor=org.owner)
    assert published == ["*"]
    org.acme.refresh_from_db()
    assert org.acme.rpm == 50 and org.acme.budget_period == "daily"
    with pytest.raises(TenantError):
        tenant_update_limits(tenant=org.acme, name="renamed")
