from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.limits.fields import LimitFields
from apps.projects.models import Project
from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScopedQuerySet


class ApiKeyQuerySet(TenantScopedQuerySet):
    project_field = "project"


class ApiKey(LimitFields):
    """An inference key. Only the keyed hash of the secret is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    # One project of the same tenant; saved without one, the tenant's default project.
    # RESTRICT: a project with keys cannot be deleted, but its tenant still can.
    project = models.ForeignKey(Project, on_delete=models.RESTRICT, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="Visible start of the secret")
    key_hash = models.CharField(max_length=64, unique=True)
    # The secret a rotation replaced, accepted until previous_valid_until (the grace
    # chosen at rotation); one at a time: the next rotation replaces it.
    previous_key_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    previous_prefix = models.CharField(max_length=16, blank=True, default="")
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    # Public model names this key may call; empty means none, "*" means every model.
    allowed_models = models.JSONField(default=list, blank=True)
    # Per-category override of the tenant's content policy; {} = the tenant's.
    content_policy = models.JSONField(default=dict, blank=True)
    # {model name: {rpm, tpm, max_concurrent, budget}} inside this key
    # (apps/limits/blocks.py checks it).
    model_limits = models.JSONField(default=dict, blank=True)
    # {tag key: value} recorded on every request of the key, under the request's own tags
    # (apps/gateway/protocol/attribution.py checks them).
    default_tags = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Written in batches from the ledger, never on the request path.
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                condition=Q(revoked_at__isnull=True),
                name="apikey_active_name_per_tenant",
            ),
            # Both or neither; and a key's two secrets differ. Across rows, each column is
            # unique; a hash in one row's key_hash and another's previous_key_hash would
            # take two equal HMACs of 256-bit random secrets.
            models.CheckConstraint(
                condition=Q(previous_key_hash__isnull=True, previous_valid_until__isnull=True)
                | (
                    Q(previous_key_hash__isnull=False, previous_valid_until__isnull=False)
                    & ~Q(previous_key_hash=models.F("key_hash"))
                ),
                name="apikey_previous_secret_whole_and_distinct",
            ),
        ]

    def save(self, *args, **kwargs) -> None:
        if self.project_id is None and self.tenant_id is not None:
            from apps.projects.selectors import project_default_get

            self.project = project_default_get(tenant_id=self.tenant_id)
        elif "project" in self._state.fields_cache and self.project.tenant_id != self.tenant_id:
            raise ValueError("a key's project belongs to the key's tenant")
        super().save(*args, **kwargs)

    def secret_hashes(self) -> list[str]:
        """The hashes a gateway process may have cached this key under."""
        return [h for h in (self.key_hash, self.previous_key_hash) if h]

    def previous_secret_valid_until(self, now: datetime | None = None) -> datetime | None:
        """When the previous secret stops working; None when there is none any more."""
        until = self.previous_valid_until
        if until is None or until <= (now or timezone.now()):
            return None
        return until

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name} ({self.prefix}…)"
