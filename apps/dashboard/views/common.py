"""What every dashboard page needs: the tenant switcher, the role and the one-time secret."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers

from apps.dashboard.access import TenantAccess, can, tenants_for_user
from apps.tenants.models import Membership

ONE_TIME = "dashboard_one_time"


def one_time_put(request: HttpRequest, *, kind: str, label: str, value: str) -> None:
    """Keep a secret (new key, token, set-password link) for the very next page only."""
    request.session[ONE_TIME] = {"kind": kind, "label": label, "value": value}


def one_time_pop(request: HttpRequest) -> dict[str, str] | None:
    return request.session.pop(ONE_TIME, None)


def page(
    request: HttpRequest,
    template: str,
    access: TenantAccess | None,
    section: str,
    **context: Any,
) -> HttpResponse:
    one_time = one_time_pop(request)
    response = render(
        request,
        template,
        {
            "access": access,
            "tenant": access.tenant if access else None,
            "switch_tenants": tenants_for_user(request.user),
            "section": section,
            "can_write": can(access, Membership.Role.ADMIN),
            "is_owner": can(access, Membership.Role.OWNER),
            "one_time": one_time,
            **context,
        },
    )
    # Pages are per user and may carry a one-time secret: never cached anywhere.
    add_never_cache_headers(response)
    return response
