from django.contrib import admin

from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke, api_key_update


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued from the dashboard, the API or `manage.py apply` (the secret is shown
    once there). Edits here go through the key services: every gateway process sees them
    within a second and the audit log records them."""

    list_display = [
        "name",
        "tenant",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["tenant"]
    search_fields = ["name", "prefix", "tenant__name"]
    exclude = ["key_hash", "previous_key_hash"]
    readonly_fields = [
        "tenant",
        "project",
        "prefix",
        "previous_prefix",
        "previous_valid_until",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        stored = ApiKey.objects.get(pk=obj.pk)
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        if changes:
            api_key_update(api_key=stored, actor=request.user, **changes)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key, actor=request.user)
