"""Tenant isolation, in one place.

Every report for a tenant reads through a queryset made by ``for_tenant(tenant)``; a
row of another tenant is then simply not there (a 404 for the API), never filtered out
later by a view. Project-level rows (projects, keys) are read through
``for_access(access)``: the tenant's, narrowed to the projects the caller may see
(``TenantAccess.visible_project_ids``, apps/tenants/access.py).
"""

from typing import Self

from django.db import models


class TenantScopedQuerySet(models.QuerySet):
    tenant_field = "tenant"
    # The row's project, for project-level rows (None: tenant-level rows).
    project_field: str | None = None

    def for_tenant(self, tenant) -> Self:
        if tenant is None:
            raise ValueError("for_tenant() needs a tenant")
        return self.filter(**{self.tenant_field: tenant})

    def for_access(self, access) -> Self:
        """The rows of the caller's tenant that the caller may see: for project-level
        rows, those of the projects visible to them."""
        rows = self.for_tenant(access.tenant)
        visible = access.visible_project_ids
        if visible is None or self.project_field is None:
            return rows
        return rows.filter(**{f"{self.project_field}__in": visible})
