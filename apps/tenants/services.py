"""Write operations on tenants: admin tokens (management API credentials), memberships
and tenant settings. Every change is recorded in the audit log (``actor``: the user or
admin token acting; None = system)."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.tokens import PasswordResetTokenGenerator, default_token_generator
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from apps.audit.services import audit_changes, audit_record
from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.keys.hashing import secret_generate, secret_hash, secret_visible_prefix
from apps.tenants.models import ADMIN_TOKEN_PREFIX, AdminToken, BillingMode, Membership, Tenant

# last_used_at is written at most this often per token (not on every API call).
LAST_USED_RESOLUTION = timedelta(minutes=1)

# Fields tenant_update_limits may change (apps/limits/fields.py).
LIMIT_FIELD_NAMES = frozenset({"rpm", "tpm", "max_concurrent", "budget_amount", "budget_period"})
# The other fields staff may change with tenant_update.
STAFF_TENANT_FIELDS = frozenset({"display_name", "byok_allowed", "billing_mode"})


class TenantError(ValueError):
    """A refused change; ``field`` names the offending input (for a 400 with field errors)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Admin tokens ------------------------------------------------------------------------------


def _acting_user(actor) -> AbstractBaseUser | None:
    """The signed-in user behind ``actor`` (a user or a TenantAccess); None for the system."""
    user = getattr(actor, "user", None) if hasattr(actor, "actor") else actor
    return user if isinstance(user, AbstractBaseUser) and user.pk is not None else None


@transaction.atomic
def admin_token_issue(*, tenant: Tenant, name: str, actor=None) -> tuple[AdminToken, str]:
    """Create a token; the secret is returned once and never stored. Who may is decided by
    apps.tenants.access (``require_admin_token_manager``); the token remembers the user who
    created it, and acts with at most that user's role (``actor`` None: the operator)."""
    if isinstance(actor, AdminToken) or getattr(actor, "token", None) is not None:
        raise TenantError("actor", "an admin token cannot create admin tokens")
    secret = secret_generate(ADMIN_TOKEN_PREFIX)
    creator = _acting_user(actor)
    token = AdminToken.objects.create(
        tenant=tenant,
        name=name,
        prefix=secret_visible_prefix(secret),
        key_hash=secret_hash(secret),
        created_by=creator,
        issued_by_user=creator is not None,
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="admin_token.issued",
        target=token,
        details={"name": name, "prefix": token.prefix},
    )
    return token, secret


@transaction.atomic
def admin_token_revoke(*, admin_token: AdminToken, actor=None) -> AdminToken:
    if admin_token.revoked_at is None:
        admin_token.revoked_at = timezone.now()
        admin_token.save(update_fields=["revoked_at"])
        audit_record(
            tenant=admin_token.tenant,
            actor=actor,
            action="admin_token.revoked",
            target=admin_token,
            details={"name": admin_token.name, "prefix": admin_token.prefix},
        )
    return admin_token


def admin_token_mark_used(*, admin_token: AdminToken) -> None:
    now = timezone.now()
    last = admin_token.last_used_at
    if last is None or now - last >= LAST_USED_RESOLUTION:
        AdminToken.objects.filter(id=admin_token.id).update(last_used_at=now)
        admin_token.last_used_at = now


# Memberships -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invitation:
    membership: Membership
    user_created: bool
    # A one-time link (path) where the invitee sets a password; None when the user already
    # has one. Shown to the inviter once; no email is sent.
    set_password_path: str | None


def _set_password_path(user: AbstractBaseUser, generator: PasswordResetTokenGenerator) -> str:
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = generator.make_token(user)
    try:
        return reverse("password_reset_confirm", kwargs={"uidb64": uidb64, "token": token})
    except NoReverseMatch:
        return f"/accounts/reset/{uidb64}/{token}/"


def _role(role: str, field: str = "role") -> str:
    if role not in Membership.Role.values:
        raise TenantError(field, f"must be one of {', '.join(Membership.Role.values)}")
    return role


def _owners_locked(tenant: Tenant) -> int:
    """Number of owners, with their rows locked until the transaction ends (so two
    concurrent demotions cannot both pass the last-owner check)."""
    return len(
        list(
            Membership.objects.select_for_update()
            .filter(tenant=tenant, role=Membership.Role.OWNER)
            .values_list("id", flat=True)
        )
    )


@transaction.atomic
def membership_invite(
    *,
    tenant: Tenant,
    email: str,
    role: str,
    actor=None,
    token_generator: PasswordResetTokenGenerator = default_token_generator,
) -> Invitation:
    """Add a member by email. A new user is created with an unusable password and gets a
    one-time set-password link (Django's password reset token: valid until used, until
    the password changes, or PASSWORD_RESET_TIMEOUT)."""
    email = email.strip()
    if not email or "@" not in email or len(email) > 254:
        raise TenantError("email", "must be an email address")
    role = _role(role)
    users = get_user_model()
    user = users.objects.filter(email__iexact=email).order_by("id").first()
    if user is None:
        user = users.objects.filter(username__iexact=email).order_by("id").first()
    created = user is None
    if created:
        user = users(username=email.lower(), email=email.lower())
        user.set_unusable_password()
        user.save()
    if Membership.objects.filter(tenant=tenant, user=user).exists():
        raise TenantError("email", f"{email} is already a member of {tenant.name}")
    membership = Membership.objects.create(tenant=tenant, user=user, role=role)
    audit_record(
        tenant=tenant,
        actor=actor,
        action="member.invited",
        target=membership,
        details={"email": user.email or user.get_username(), "role": role, "new_user": created},
    )
    link = None if user.has_usable_password() else _set_password_path(user, token_generator)
    return Invitation(membership=membership, user_created=created, set_password_path=link)


@transaction.atomic
def membership_set_role(*, membership: Membership, role: str, actor=None) -> Membership:
    """Change a member's role; the tenant's last owner cannot be demoted."""
    role = _role(role)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == role:
        return membership
    if membership.role == Membership.Role.OWNER and _owners_locked(membership.tenant) <= 1:
        raise TenantError("role", "the last owner cannot be demoted; make another owner first")
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        tenant=membership.tenant,
        actor=actor,
        action="member.role_changed",
        target=membership,
        details={"user": _user_label(membership.user), "from": previous, "to": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor=None) -> None:
    """Remove a member; the tenant's last owner cannot be removed."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Membership.Role.OWNER and _owners_locked(membership.tenant) <= 1:
        raise TenantError("role", "the last owner cannot be removed; make another owner first")
    audit_record(
        tenant=membership.tenant,
        actor=actor,
        action="member.removed",
        target=membership,
        details={"user": _user_label(membership.user), "role": membership.role},
    )
    membership.delete()


def _user_label(user: AbstractBaseUser) -> str:
    return getattr(user, "email", "") or user.get_username()


# Tenants -----------------------------------------------------------------------------------


@transaction.atomic
def tenant_update_limits(*, tenant: Tenant, actor=None, **fields: Any) -> Tenant:
    """Change the tenant's rpm, tpm, max_concurrent and budget. Every gateway process drops
    its cached keys (they carry their tenant's limits) once the transaction commits."""
    unknown = set(fields) - LIMIT_FIELD_NAMES
    if unknown:
        raise TenantError(sorted(unknown)[0], "not a tenant limit")
    diff = audit_changes(tenant, fields)
    if not diff:
        return tenant
    for name in diff:
        setattr(tenant, name, fields[name])
    tenant.save(update_fields=list(diff))
    transaction.on_commit(lambda: publish(KEYS_INVALIDATE_CHANNEL, "*"))
    audit_record(
        tenant=tenant,
        actor=actor,
        action="tenant.limits_changed",
        target=tenant,
        details={"changes": diff},
    )
    return tenant


@transaction.atomic
def tenant_create(
    *,
    name: str,
    display_name: str = "",
    byok_allowed: bool = False,
    actor=None,
    **limits: Any,
) -> Tenant:
    """Staff: a new tenant (no members; invite its first owner next)."""
    unknown = set(limits) - LIMIT_FIELD_NAMES
    if unknown:
        raise TenantError(sorted(unknown)[0], "not a tenant limit")
    if Tenant.objects.filter(name=name).exists():
        raise TenantError("name", f"a tenant named '{name}' exists")
    tenant = Tenant.objects.create(
        name=name, display_name=display_name, byok_allowed=byok_allowed, **limits
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="tenant.created",
        target=tenant,
        details={
            "name": name,
            "display_name": display_name,
            "byok_allowed": byok_allowed,
            **limits,
        },
    )
    return tenant


@transaction.atomic
def tenant_update(*, tenant: Tenant, actor=None, **fields: Any) -> Tenant:
    """Staff: display name, the BYOK opt-in, the billing mode and limits (limits through
    tenant_update_limits)."""
    limits = {k: v for k, v in fields.items() if k in LIMIT_FIELD_NAMES}
    other = {k: v for k, v in fields.items() if k not in LIMIT_FIELD_NAMES}
    unknown = set(other) - STAFF_TENANT_FIELDS
    if unknown:
        raise TenantError(sorted(unknown)[0], "cannot be changed")
    if "billing_mode" in other and other["billing_mode"] not in BillingMode.values:
        raise TenantError("billing_mode", f"must be one of {BillingMode.values}")
    diff = audit_changes(tenant, other)
    if diff:
        for name in diff:
            setattr(tenant, name, other[name])
        tenant.save(update_fields=list(diff))
        if "byok_allowed" in diff or "billing_mode" in diff:
            # Keys carry their tenant's opt-in and billing mode in every gateway's cache.
            transaction.on_commit(lambda: publish(KEYS_INVALIDATE_CHANNEL, "*"))
        audit_record(
            tenant=tenant,
            actor=actor,
            action="tenant.updated",
            target=tenant,
            details={"changes": diff},
        )
    if limits:
        tenant_update_limits(tenant=tenant, actor=actor, **limits)
    return tenant
