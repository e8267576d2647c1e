"""Balance: a tenant's prepaid balance, its journal, the usage debited per day and the CSV
of the journal (the management API's export, which accepts the session). Members read;
only staff credit a balance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.dashboard.access import TenantAccess, access_required, staff_required
from apps.dashboard.forms import GrantForm
from apps.dashboard.views.common import page
from apps.tenants.access import require_every_project
from apps.wallet.selectors import balance_entries, balance_get, balance_usage_by_day
from apps.wallet.services import BalanceError, balance_entry_add

USAGE_DAYS = 31
ENTRIES_SHOWN = 200


def _page(request: HttpRequest, access: TenantAccess, form: GrantForm | None) -> HttpResponse:
    tenant = access.tenant
    since = datetime.now(UTC) - timedelta(days=USAGE_DAYS)
    return page(
        request,
        "dashboard/balance.html",
        access,
        "balance",
        balance=balance_get(tenant=tenant),
        entries=balance_entries(tenant=tenant)[:ENTRIES_SHOWN],
        usage_days=balance_usage_by_day(tenant=tenant, since=since),
        usage_window=USAGE_DAYS,
        csv_link=reverse("api-balance-entries-csv") + f"?tenant={tenant.name}",
        grant_form=form if request.user.is_staff else None,
    )


@login_required
@require_GET
def balance(request: HttpRequest) -> HttpResponse:
    if request.GET.get("top_up") == "paid":  # back from Stripe Checkout
        messages.info(request, "Payment received: the balance grows as soon as Stripe confirms it.")
    elif request.GET.get("top_up") == "cancelled":
        messages.info(request, "Top-up cancelled: nothing was charged.")
    return _page(request, require_every_project(access_required(request)), GrantForm())


@login_required
@require_POST
def balance_grant(request: HttpRequest) -> HttpResponse:
    staff_required(request)
    access = access_required(request)
    form = GrantForm(request.POST)
    if form.is_valid():
        try:
            _entry, created = balance_entry_add(
                tenant=access.tenant,
                kind="grant",
                amount=Decimal(form.cleaned_data["amount"]),
                ref=form.cleaned_data["ref"],
                reason=form.cleaned_data["reason"],
                actor=request.user,
            )
        except BalanceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            if created:
                messages.success(request, "Balance credited.")
            else:
                messages.info(request, "A grant with this reference exists: nothing changed.")
            return redirect("dashboard:balance")
    return _page(request, access, form)
