from django.contrib import admin, messages

from apps.billing.models import (
    RateCard,
    RateCardPrice,
    ReconciliationRun,
    Statement,
    StatementLine,
    UsageRollup,
)
from apps.billing.services import StatementError, statement_close, statement_refresh
from apps.catalog.admin import PRICE_RULE_FIELDSETS


class StatementLineInline(admin.TabularInline):
    model = StatementLine
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in StatementLine._meta.fields]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Statement)
class StatementAdmin(admin.ModelAdmin):
    list_display = ["tenant", "period_start", "status", "total", "amount_due", "closed_at"]
    list_filter = ["status", "period_start"]
    search_fields = ["tenant__name"]
    readonly_fields = [f.name for f in Statement._meta.fields]
    inlines = [StatementLineInline]
    actions = ["refresh", "close"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Refresh from the ledger (open statements)")
    def refresh(self, request, queryset) -> None:
        for statement in queryset:
            statement_refresh(statement=statement)

    @admin.action(description="Close (freeze) the statement")
    def close(self, request, queryset) -> None:
        for statement in queryset.order_by("tenant_id", "period_start"):
            try:
                statement_close(statement=statement)
            except StatementError as exc:
                self.message_user(request, str(exc), messages.ERROR)


@admin.register(UsageRollup)
class UsageRollupAdmin(admin.ModelAdmin):
    list_display = ["granularity", "bucket_start", "tenant", "api_key", "model", "requests", "cost"]
    list_filter = ["granularity"]
    search_fields = ["tenant__name", "model"]
    readonly_fields = [f.name for f in UsageRollup._meta.fields]


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(admin.ModelAdmin):
    list_display = ["started_at", "window_start", "window_end", "ok"]
    list_filter = ["ok"]
    readonly_fields = [f.name for f in ReconciliationRun._meta.fields]


class RateCardPriceInline(admin.StackedInline):
    """A model the card prices itself (no markup applies to it)."""

    model = RateCardPrice
    extra = 0
    autocomplete_fields = ["model"]
    fieldsets = [(None, {"fields": ["model"]}), *PRICE_RULE_FIELDSETS]


@admin.register(RateCard)
class RateCardAdmin(admin.ModelAdmin):
    list_display = ["tenant", "effective_from", "markup_percent", "overrides", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["tenant__name"]
    autocomplete_fields = ["tenant"]
    fields = ["tenant", "effective_from", "markup_percent"]
    inlines = [RateCardPriceInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("tenant").prefetch_related("prices")

    @admin.display(description="model overrides")
    def overrides(self, obj: RateCard) -> int:
        return len(obj.prices.all())
