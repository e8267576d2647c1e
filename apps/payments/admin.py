from django.contrib import admin

from apps.payments.models import PaymentAccount, RechargeAttempt, StripeEvent, TopUp


@admin.register(PaymentAccount)
class PaymentAccountAdmin(admin.ModelAdmin):
    list_display = ("tenant", "stripe_customer_id", "payment_method_label", "recharge_enabled")
    readonly_fields = ("stripe_customer_id", "payment_method_id", "payment_method_label")


@admin.register(TopUp)
class TopUpAdmin(admin.ModelAdmin):
    list_display = ("tenant", "amount", "currency", "status", "created_at", "paid_at")
    list_filter = ("status",)

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RechargeAttempt)
class RechargeAttemptAdmin(admin.ModelAdmin):
    list_display = ("tenant", "amount", "status", "payment_intent_id", "created_at")
    list_filter = ("status",)

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ("event_id", "type", "outcome", "received_at")

    def has_change_permission(self, request, obj=None) -> bool:
        return False
