from django.contrib import admin
from django.db import transaction

from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.tenants.models import AdminToken, Membership, Tenant
from apps.tenants.services import admin_token_revoke


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_name",
        "rpm",
        "tpm",
        "budget_amount",
        "budget_period",
        "byok_allowed",
        "billing_mode",
        "created_at",
    ]
    list_filter = ["byok_allowed", "billing_mode"]
    search_fields = ["name", "display_name"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        # Keys carry their tenant's limits, BYOK opt-in and billing mode in every gateway's
        # cache.
        transaction.on_commit(lambda: publish(KEYS_INVALIDATE_CHANNEL, "*"))


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "tenant__name"]
    autocomplete_fields = ["user", "tenant"]


@admin.register(AdminToken)
class AdminTokenAdmin(admin.ModelAdmin):
    """Tokens are issued from the dashboard or `manage.py apply` (the secret is shown once
    there); here they can only be looked at and revoked."""

    list_display = ["tenant", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "prefix", "tenant__name"]
    exclude = ["key_hash"]
    readonly_fields = ["tenant", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:
        for token in queryset.filter(revoked_at__isnull=True):
            admin_token_revoke(admin_token=token, actor=request.user)
