from django.contrib import admin

from apps.alerts.models import AlertEvent, AlertSettings, WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Staff set allow_http / allow_internal here (or through the dashboard and API)."""

    list_display = ("id", "tenant", "url", "enabled", "allow_http", "allow_internal")
    list_filter = ("enabled", "allow_http", "allow_internal")
    fields = (
        "tenant",
        "url",
        "description",
        "enabled",
        "event_types",
        "allow_http",
        "allow_internal",
        "secret_prefix",
    )
    readonly_fields = ("tenant", "secret_prefix")

    def has_add_permission(self, request) -> bool:
        return False  # created through the service (the secret is generated there)


@admin.register(AlertSettings)
class AlertSettingsAdmin(admin.ModelAdmin):
    list_display = ("tenant", "budget_percents", "balance_below", "email_enabled")


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = ("public_id", "tenant", "type", "created_at", "email_status")
    list_filter = ("type", "email_status")
    readonly_fields = [f.name for f in AlertEvent._meta.fields]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "endpoint", "status", "attempts", "last_status_code")
    list_filter = ("status",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
