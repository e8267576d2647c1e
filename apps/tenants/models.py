from django.conf import settings
from django.db import models

from apps.limits.fields import LimitFields

# Admin tokens (management API) start with this; inference keys start with "tg-".
ADMIN_TOKEN_PREFIX = "tga-"


class BillingMode(models.TextChoices):
    POSTPAID = "postpaid"  # monthly statements
    PREPAID = "prepaid"  # a balance, debited per request (apps/wallet)


class Tenant(LimitFields):
    name = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Default content policy of the tenant's keys (apps/moderation/policy.py); {} = off.
    content_policy = models.JSONField(default=dict, blank=True)
    # Staff's opt-in: the tenant's callers may send their own upstream key (README,
    # "Bring your own upstream key"); without it such a request is a 400.
    byok_allowed = models.BooleanField(
        default=False,
        db_default=False,
        verbose_name="callers may bring their own upstream key",
        help_text="Requests may carry their own upstream key (openai_api_key, "
        "x-upstream-authorization) for backends that accept one",
    )

    billing_mode = models.CharField(
        max_length=8,
        choices=BillingMode.choices,
        default=BillingMode.POSTPAID,
        db_default=BillingMode.POSTPAID,
    )

    def __str__(self) -> str:
        return self.name

    @property
    def prepaid(self) -> bool:
        return self.billing_mode == BillingMode.PREPAID


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        VIEWER = "viewer"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_user_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class AdminToken(models.Model):
    """A tenant admin token for the management API (/api/). Never valid on /v1: its secret
    starts with ``tga-`` and only the keyed hash is stored, like an inference key's."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="admin_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="Visible start of the secret")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Who created it decides what it may do (apps.tenants.access.admin_token_role): a token
    # a user created acts with at most that user's role in the tenant *now*, and stops
    # working when the user is no longer a member (or deleted: created_by NULL with
    # issued_by_user set). Tokens the operator issued (config as code) act as admin.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    issued_by_user = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="admintoken_active_name_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name} ({self.prefix}…)"
