from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from apps.api import (
    schema,  # noqa: F401 - registers the admin token scheme
    views,
)

urlpatterns = [
    # Tenant-scoped (admin token, or a session user's tenant).
    path("v1/keys", views.KeyListView.as_view(), name="api-keys"),
    path("v1/keys/<int:key_id>", views.KeyDetailView.as_view(), name="api-key"),
    path("v1/keys/<int:key_id>/rotate", views.KeyRotateView.as_view(), name="api-key-rotate"),
    path("v1/keys/<int:key_id>/revoke", views.KeyRevokeView.as_view(), name="api-key-revoke"),
    path("v1/projects", views.ProjectListView.as_view(), name="api-projects"),
    path("v1/projects/<int:project_id>", views.ProjectDetailView.as_view(), name="api-project"),
    path(
        "v1/projects/<int:project_id>/members",
        views.ProjectMemberListView.as_view(),
        name="api-project-members",
    ),
    path(
        "v1/projects/<int:project_id>/members/<int:member_id>",
        views.ProjectMemberDetailView.as_view(),
        name="api-project-member",
    ),
    path(
        "v1/projects/<int:project_id>/keys",
        views.ProjectKeyListView.as_view(),
        name="api-project-keys",
    ),
    path("v1/admin-tokens", views.AdminTokenListView.as_view(), name="api-admin-tokens"),
    path(
        "v1/admin-tokens/<int:token_id>/revoke",
        views.AdminTokenRevokeView.as_view(),
        name="api-admin-token-revoke",
    ),
    path("v1/members", views.MemberListView.as_view(), name="api-members"),
    path("v1/members/<int:member_id>", views.MemberDetailView.as_view(), name="api-member"),
    path("v1/audit-events", views.AuditEventListView.as_view(), name="api-audit-events"),
    path("v1/tenant", views.TenantSettingsView.as_view(), name="api-tenant"),
    path("v1/balance", views.BalanceView.as_view(), name="api-balance"),
    path("v1/balance/entries", views.BalanceEntryListView.as_view(), name="api-balance-entries"),
    path(
        "v1/balance/entries.csv",
        views.BalanceEntryCSVView.as_view(),
        name="api-balance-entries-csv",
    ),
    # Staff only.
    path("v1/staff/tenants", views.StaffTenantListView.as_view(), name="api-staff-tenants"),
    path(
        "v1/staff/tenants/<int:tenant_id>",
        views.StaffTenantDetailView.as_view(),
        name="api-staff-tenant",
    ),
    path(
        "v1/staff/tenants/<int:tenant_id>/rate-cards",
        views.RateCardListView.as_view(),
        name="api-staff-rate-cards",
    ),
    path(
        "v1/staff/tenants/<int:tenant_id>/rate-cards/<int:rate_card_id>",
        views.RateCardDetailView.as_view(),
        name="api-staff-rate-card",
    ),
    path(
        "v1/staff/tenants/<int:tenant_id>/grants",
        views.StaffTenantGrantView.as_view(),
        name="api-staff-tenant-grants",
    ),
    path("v1/staff/backends", views.BackendListView.as_view(), name="api-staff-backends"),
    path(
        "v1/staff/backends/<int:backend_id>",
        views.BackendDetailView.as_view(),
        name="api-staff-backend",
    ),
    path("v1/staff/models", views.ModelListView.as_view(), name="api-staff-models"),
    path("v1/staff/models/<int:model_id>", views.ModelDetailView.as_view(), name="api-staff-model"),
    path("v1/staff/deployments", views.DeploymentListView.as_view(), name="api-staff-deployments"),
    path(
        "v1/staff/deployments/<int:deployment_id>",
        views.DeploymentDetailView.as_view(),
        name="api-staff-deployment",
    ),
    path("v1/staff/prices", views.PriceListView.as_view(), name="api-staff-prices"),
    path("v1/staff/prices/<int:price_id>", views.PriceDetailView.as_view(), name="api-staff-price"),
    path("v1/staff/pipeline", views.PipelineView.as_view(), name="api-staff-pipeline"),
    # OpenAPI schema and docs (public: they describe, they do not expose data).
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", views.SwaggerDocsView.as_view(url_name="api-schema"), name="api-docs"),
]
