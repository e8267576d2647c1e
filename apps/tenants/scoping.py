"""Tenant isolation, in one place.

Every report for a tenant reads through a queryset made by ``for_tenant(tenant)``; a
row of another tenant is then simply not there (a 404 for the API), never filtered out
later by a view.
"""

from typing import Self

from django.db import models


class TenantScopedQuerySet(models.QuerySet):
    tenant_field = "tenant"

    def for_tenant(self, tenant) -> Self:
        if tenant is None:
            raise ValueError("for_tenant() needs a tenant")
        return self.filter(**{self.tenant_field: tenant})
