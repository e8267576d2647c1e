from django.contrib import admin

from apps.ledger.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The ledger is written by the ingest only: read-only here."""

    list_display = [
        "request_id",
        "created_at",
        "tenant",
        "api_key",
        "model",
        "status",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    ]
    list_filter = ["status", "model", "protocol", "stream", "service_tier", "byok"]
    search_fields = ["request_id", "tenant__name", "model"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant", "api_key"]
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in UsageRecord._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
