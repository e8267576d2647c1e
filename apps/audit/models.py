"""The audit log: who did what to which object of a tenant, and when. Rows are only ever
added (apps/audit/services.py); nothing in them is a secret."""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from apps.tenants.models import AdminToken, Tenant
from apps.tenants.scoping import TenantScopedQuerySet


class AuditEvent(models.Model):
    # NULL: a platform-wide change by staff (backends, models, prices, tenants).
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_events"
    )
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_token = models.ForeignKey(
        AdminToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept when the user or token is deleted: "alice@example.com", "admin-token ops (tga-ab…)",
    # "system" (config as code, management commands).
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="audit_tenant_time"),
            models.Index(fields=["tenant", "action", "-created_at"], name="audit_tenant_action"),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"
