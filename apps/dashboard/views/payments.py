"""The Balance page's payments panel: owners start a top-up (to Stripe Checkout and back)
and set auto-recharge. Everyone in the tenant sees the panel's state; the forms are the
owners' (403 for anyone else, before anything else is looked at)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.dashboard.access import access_required
from apps.dashboard.payment_forms import AutoRechargeForm, TopUpForm
from apps.payments.selectors import payment_account_get, payments_enabled
from apps.payments.services import PaymentsError, PaymentsOff, recharge_settings_set, top_up_start
from apps.payments.stripe_api import PaymentError
from apps.tenants.models import Membership

OWNER = Membership.Role.OWNER


def _back(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard:balance")


@login_required
@require_POST
def top_up(request: HttpRequest) -> HttpResponse:
    access = access_required(request, OWNER)
    if not payments_enabled():
        raise Http404(PaymentsOff.message)
    form = TopUpForm(request.POST)
    if not form.is_valid():
        for error in form.errors.get("amount", []):
            messages.error(request, f"Top-up amount: {error}")
        return _back(request)
    back = request.build_absolute_uri(reverse("dashboard:balance"))
    try:
        _, url = top_up_start(
            tenant=access.tenant,
            amount=form.cleaned_data["amount"],
            success_url=back + "?top_up=paid",
            cancel_url=back + "?top_up=cancelled",
            email=request.user.email,
            actor=request.user,
        )
    except PaymentsError as exc:
        messages.error(request, f"Top-up {exc.field}: {exc.message}")
        return _back(request)
    except PaymentError as exc:
        messages.error(request, f"Stripe refused the top-up: {exc.message}")
        return _back(request)
    return redirect(url)


@login_required
@require_POST
def auto_recharge(request: HttpRequest) -> HttpResponse:
    access = access_required(request, OWNER)
    form = AutoRechargeForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            for error in errors:
                messages.error(request, f"Auto-recharge {field}: {error}")
        return _back(request)
    data = form.cleaned_data
    saved = payment_account_get(tenant=access.tenant)

    def kept(field: str, attribute: str, default):
        """The value sent, else the saved one (blank fields of a switch-off)."""
        if data[field] is not None:
            return data[field]
        return getattr(saved, attribute) if saved is not None else default

    minutes = data["window_minutes"]
    try:
        recharge_settings_set(
            tenant=access.tenant,
            enabled=data["enabled"],
            threshold=kept("threshold", "recharge_threshold", 0),
            amount=kept("amount", "recharge_amount", 0),
            window_s=minutes * 60
            if minutes is not None
            else kept("window_minutes", "recharge_window_s", 3600),
            actor=request.user,
        )
    except PaymentsOff as exc:
        raise Http404(exc.message) from None
    except PaymentsError as exc:
        messages.error(request, f"Auto-recharge {exc.field}: {exc.message}")
        return _back(request)
    messages.success(request, "Auto-recharge saved.")
    return _back(request)
