"""Staff pages (is_staff only; a 404 for anyone else): tenants, backends and deployments
with their health, models and prices, margins, rate cards, and the metering pipeline."""

from __future__ import annotations

import re
from datetime import date, timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
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


MONTH = re.compile(r"(\d{4})-(\d{2})")


def _month(raw: str | None) -> date | None:
    """?month=YYYY-MM (default: the current UTC month); None if it is not one."""
    if not raw:
        return timezone.now().date().replace(day=1)
    match = MONTH.fullmatch(raw)
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
        return None
    return date(int(match.group(1)), int(match.group(2)), 1)


@login_required
@require_GET
def margins(request: HttpRequest) -> HttpResponse:
    staff_required(request)
    month = _month(request.GET.get("month"))
    if month is None:
        response = page(
            request,
            "dashboard/staff/margins.html",
            current_access(request),
            "staff-margins",
            error="month must be YYYY-MM",
        )
        response.status_code = 400
        return response
    lines, total = selectors.staff_margins(month=month)
    previous = (month.replace(day=1) - timedelta(days=1)).replace(day=1)
    following = (month + timedelta(days=32)).replace(day=1)
    return page(
        request,
        "dashboard/staff/margins.html",
        current_access(request),
        "staff-margins",
        month=month,
        previous=previous,
        following=following,
        lines=lines,
        total=total,
    )


@login_required
@require_GET
def rate_cards(request: HttpRequest) -> HttpResponse:
    staff_required(request)
    return page(
        request,
        "dashboard/staff/rate_cards.html",
        current_access(request),
        "staff-rate-cards",
        tenants=selectors.staff_rate_cards(),
    )
