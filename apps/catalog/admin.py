from django import forms
from django.contrib import admin

from apps.catalog.models import BACKEND_SETTINGS, Backend, Deployment, Model, Price


class BackendForm(forms.ModelForm):
    """The upstream credential is write-only: typed in, stored encrypted, never shown."""

    credential = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the stored credential.",
    )
    clear_credential = forms.BooleanField(required=False)

    class Meta:
        model = Backend
        fields = list(BACKEND_SETTINGS)


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0


# A price rule's fields in the admin (catalog Price and billing RateCardPrice alike): an
# error of PriceFields.clean() is shown on its field, naming the tier or service tier.
PRICE_RULE_FIELDSETS = [
    (
        "Rates (USD per million tokens; an empty optional rate follows its default)",
        {
            "fields": [
                ("input_per_mtok", "cached_input_per_mtok"),
                ("cache_write_5m_per_mtok", "cache_write_1h_per_mtok"),
                ("output_per_mtok", "reasoning_per_mtok"),
                "request_fee",
            ]
        },
    ),
    ("Long-context and service tiers", {"fields": ["tiers", "service_tiers"]}),
    ("Caller-keyed (BYOK) requests", {"fields": [("byok_fee_percent", "byok_request_fee")]}),
]


class PriceInline(admin.StackedInline):
    model = Price
    extra = 0
    fieldsets = [(None, {"fields": ["effective_from"]}), *PRICE_RULE_FIELDSETS]


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    form = BackendForm
    list_display = [
        "name",
        "kind",
        "base_url",
        "enabled",
        "timeout_s",
        "has_credential",
        "byok_allowed",
    ]
    list_filter = ["kind", "enabled", "byok_allowed"]
    search_fields = ["name", "base_url"]

    @admin.display(boolean=True)
    def has_credential(self, obj: Backend) -> bool:
        return bool(obj.credential_encrypted)

    def save_model(self, request, obj, form, change) -> None:
        if form.cleaned_data.get("clear_credential"):
            obj.credential = ""
        elif form.cleaned_data.get("credential"):
            obj.credential = form.cleaned_data["credential"]
        super().save_model(request, obj, form, change)


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_name",
        "enabled",
        "strategy",
        "max_output_tokens",
        "created_at",
    ]
    list_filter = ["enabled", "strategy"]
    search_fields = ["name", "display_name"]
    inlines = [DeploymentInline, PriceInline]
    fieldsets = [
        (None, {"fields": ["name", "aliases", "display_name", "enabled"]}),
        (
            "Fallbacks",
            {
                "description": 'Other models\' names, as a JSON list (["model-b", "model-c"]), '
                "tried in order when every deployment of this one fails, or when an "
                "upstream says the prompt is too long. A fallback's own fallbacks are not "
                "followed; the key's model allowlist applies to each.",
                "fields": ["fallbacks", "context_window_fallbacks"],
            },
        ),
        (
            "Budget bounds",
            {
                "description": "A budget reserves the most a request can cost: its text's "
                "UTF-8 bytes plus these allowances; billing never exceeds the reservation.",
                "fields": [
                    "prompt_allowance_per_request",
                    "prompt_allowance_per_message",
                    "image_token_bound",
                    "max_output_tokens",
                ],
            },
        ),
        (
            "Balancing",
            {
                "description": "The order a request tries the deployments in; the ones after "
                "the first are its failover.",
                "fields": ["strategy", "affinity_key"],
            },
        ),
    ]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["model", "backend", "upstream_model", "weight"]
    list_filter = ["backend"]
    search_fields = ["model__name", "upstream_model"]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "effective_from",
        "input_per_mtok",
        "cached_input_per_mtok",
        "output_per_mtok",
        "request_fee",
        "has_tiers",
    ]
    list_filter = ["model"]
    fieldsets = [(None, {"fields": ["model", "effective_from"]}), *PRICE_RULE_FIELDSETS]

    @admin.display(boolean=True, description="tiers")
    def has_tiers(self, obj: Price) -> bool:
        return bool(obj.tiers or obj.service_tiers)
