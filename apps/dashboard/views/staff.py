"""Staff pages (is_staff only; a 404 for anyone else): tenants, backends and deployments
with their health, models and prices, and the metering pipeline."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from apps.dashboard import selectors
from apps.dashboard.access import current_access, staff_required
from apps.dashboard.views.common import page


@login_required
@require_GET
def tenants(request: HttpRequest) -> HttpResponse:
    staff_required(request)
    return page(
        request,
        "dashboard/staff/tenants.html",
        current_access(request),
        "staff-tenants",
        tenants=selectors.staff_tenants(),
    )


@login_required
@require_GET
def backends(request: HttpRequest) -> HttpResponse:
    staff_required(request)
    return page(
        request,
        "dashboard/staff/backends.html",
        current_access(request),
        "staff-backends",
        backends=selectors.staff_backends(),
    )


@login_required
@require_GET
def models(request: HttpRequest) -> HttpResponse:
    staff_required(request)
    return page(
        request,
        "dashboard/staff/models.html",
        current_access(request),
        "staff-models",
        models=selectors.staff_models(),
    )


@login_required
@require_GET
def pipeline(request: HttpRequest) -> HttpResponse:
    staff_required(request)
    return page(
        request,
        "dashboard/staff/pipeline.html",
        current_access(request),
        "staff-pipeline",
        state=selectors.staff_pipeline(),
    )
