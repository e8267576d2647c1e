from django.contrib import admin

from apps.wallet.models import BalanceEntry


@admin.register(BalanceEntry)
class BalanceEntryAdmin(admin.ModelAdmin):
    """The journal is append-only and written through ``balance_entry_add`` (config, the
    API, the dashboard, payments): here it is only looked at."""

    list_display = ["created_at", "tenant", "kind", "amount", "ref", "reason", "created_by"]
    list_filter = ["kind"]
    search_fields = ["tenant__name", "ref", "reason"]
    readonly_fields = ["tenant", "kind", "amount", "ref", "reason", "created_by", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
