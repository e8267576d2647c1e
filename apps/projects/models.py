from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.limits.fields import LimitFields
from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScopedQuerySet

DEFAULT_PROJECT_NAME = "default"


class ProjectQuerySet(TenantScopedQuerySet):
    project_field = "id"


def every_model() -> list[str]:
    return ["*"]


class Project(LimitFields):
    """A group of a tenant's keys with its own allowlist, limits and budget (the limit
    fields: rpm, tpm, max_concurrent, budget; empty = unlimited)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="projects")
    name = models.SlugField(max_length=64)
    display_name = models.CharField(max_length=200, blank=True, default="")
    is_default = models.BooleanField(default=False)
    # Public model names the project's keys may call, narrowing each key's own list:
    # [] = none, "*" = every model (the key's convention).
    allowed_models = models.JSONField(default=every_model, blank=True)
    # {model name: {rpm, tpm, max_concurrent, budget: {amount, period}}} across the
    # project's keys (apps/limits/blocks.py checks it).
    model_limits = models.JSONField(default=dict, blank=True)
    # {rpm, tpm, budget: {amount, period}} for each end user of the project's keys.
    end_user_limits = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="project_name_per_tenant"),
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(is_default=True), name="project_one_default"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}"


class ProjectMembership(models.Model):
    """A member's role in one project, on top of the tenant role: a project admin manages
    that project's keys only; a viewer reads it."""

    class Role(models.TextChoices):
        VIEWER = "viewer"
        ADMIN = "admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="project_membership_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"
