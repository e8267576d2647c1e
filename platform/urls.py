from django.contrib import admin
from django.urls import include, path

from apps.core.health import healthz, metrics, readyz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("apps.dashboard.auth_urls")),
    path("dashboard/", include("apps.dashboard.urls")),
    path("api/", include("apps.billing.urls")),
    path("api/", include("apps.api.urls")),
    path("api/", include("apps.alerts.urls")),
    path("api/", include("apps.payments.api_urls")),
    path("payments/", include("apps.payments.urls")),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics),
]
