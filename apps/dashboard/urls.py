from django.urls import path

from apps.dashboard.views import alerts, balance, keys, members, payments, staff, tenant, usage

app_name = "dashboard"

urlpatterns = [
    path("", members.home, name="home"),
    path("tenant/", members.switch_tenant, name="switch-tenant"),
    path("keys/", keys.key_list, name="keys"),
    path("keys/new/", keys.key_create, name="key-create"),
    path("keys/<int:key_id>/", keys.key_edit, name="key-edit"),
    path("keys/<int:key_id>/policy/", keys.key_policy, name="key-policy"),
    path("keys/<int:key_id>/rotate/", keys.key_rotate, name="key-rotate"),
    path("keys/<int:key_id>/revoke/", keys.key_revoke, name="key-revoke"),
    path("usage/", usage.usage, name="usage"),
    path("statements/", usage.statement_list, name="statements"),
    path("statements/<int:statement_id>/", usage.statement_detail, name="statement-detail"),
    path("balance/", balance.balance, name="balance"),
    path("staff/balance/grant/", balance.balance_grant, name="balance-grant"),
    path("members/", members.member_list, name="members"),
    path("members/invite/", members.member_invite, name="member-invite"),
    path("members/<int:membership_id>/role/", members.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", members.member_remove, name="member-remove"),
    path("tokens/", members.token_list, name="tokens"),
    path("tokens/new/", members.token_create, name="token-create"),
    path("tokens/<int:token_id>/revoke/", members.token_revoke, name="token-revoke"),
    path("audit/", members.audit_log, name="audit"),
    path("settings/", tenant.tenant_settings, name="settings"),
    path("settings/policy/", tenant.tenant_policy, name="settings-policy"),
    # Alerts and webhooks (apps/alerts).
    path("alerts/", alerts.alert_settings, name="alerts"),
    path("webhooks/", alerts.webhook_list, name="webhooks"),
    path("webhooks/<int:endpoint_id>/", alerts.webhook_detail, name="webhook"),
    path("webhooks/<int:endpoint_id>/test/", alerts.webhook_test, name="webhook-test"),
    path("webhooks/<int:endpoint_id>/rotate/", alerts.webhook_rotate, name="webhook-rotate"),
    path("webhooks/<int:endpoint_id>/delete/", alerts.webhook_delete, name="webhook-delete"),
    # Balance and its payments panel (top-ups through Stripe, auto-recharge).
    path("payments/top-up/", payments.top_up, name="payments-top-up"),
    path("payments/auto-recharge/", payments.auto_recharge, name="payments-auto-recharge"),
    path("staff/tenants/", staff.tenants, name="staff-tenants"),
    path("staff/backends/", staff.backends, name="staff-backends"),
    path("staff/models/", staff.models, name="staff-models"),
    path("staff/margins/", staff.margins, name="staff-margins"),
    path("staff/rate-cards/", staff.rate_cards, name="staff-rate-cards"),
    path("staff/pipeline/", staff.pipeline, name="staff-pipeline"),
]
