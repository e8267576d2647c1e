from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.limits.fields import LimitFields
from apps.tenants.models import Tenant


class ApiKey(LimitFields):
    """An inference key. Only the keyed hash of the secret is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="Visible start of the secret")
    key_hash = models.CharField(max_length=64, unique=True)
    # Public model names this key may call; empty means none, "*" means every model.
    allowed_models = models.JSONField(default=list, blank=True)
    # Per-category override of the tenant's content policy; {} = the tenant's.
    content_policy = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Written in batches from the ledger, never on the request path.
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                condition=Q(revoked_at__isnull=True),
                name="apikey_active_name_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name} ({self.prefix}…)"
