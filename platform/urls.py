from django.contrib import admin
from django.urls import include, path

from apps.core.health import healthz, metrics, readyz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("apps.billing.urls")),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics),
]
