"""``{% payments_panel %}``: the Balance page's top-up and auto-recharge panel, with its
own context, so that any balance page includes it with one line."""

from __future__ import annotations

from django import template

from apps.dashboard.payment_forms import AutoRechargeForm, TopUpForm
from apps.payments import selectors

register = template.Library()


@register.inclusion_tag("dashboard/payments/_panel.html", takes_context=True)
def payments_panel(context) -> dict:
    access = context.get("access")
    tenant = access.tenant if access is not None else None
    account = selectors.payment_account_get(tenant=tenant) if tenant is not None else None
    low, high = selectors.topup_bounds()
    initial = {
        "enabled": bool(account and account.recharge_enabled),
        "threshold": account.recharge_threshold if account else None,
        "amount": account.recharge_amount if account and account.recharge_amount else None,
        "window_minutes": (account.recharge_window_s // 60) if account else 60,
    }
    return {
        "request": context.get("request"),
        "csrf_token": context.get("csrf_token"),
        "tenant": tenant,
        "is_owner": bool(access is not None and access.is_owner),
        "enabled": selectors.payments_enabled() and tenant is not None and tenant.prepaid,
        "account": account,
        "low": low,
        "high": high,
        "top_up_form": TopUpForm(),
        "recharge_form": AutoRechargeForm(initial=initial),
        "top_ups": list(selectors.top_up_list(tenant=tenant)[:5]) if tenant is not None else [],
        "attempts": list(selectors.recharge_attempt_list(tenant=tenant)[:5])
        if tenant is not None
        else [],
    }
