"""Forms of the Balance page's payments panel (top-up, auto-recharge). They only clean
input; apps.payments.services validate the amounts again and write."""

from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from apps.payments.selectors import topup_bounds


class TopUpForm(forms.Form):
    amount = forms.DecimalField(max_digits=14, decimal_places=2, label="Amount (USD)")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        low, high = topup_bounds()
        field = self.fields["amount"]
        field.validators = [*field.validators, MinValueValidator(low), MaxValueValidator(high)]
        field.widget.attrs.update(min=str(low), max=str(high), step="0.01")


class AutoRechargeForm(forms.Form):
    """Amounts are needed to turn auto-recharge on, not to turn it off: switched off with
    the amounts left blank, the saved ones are kept for next time."""

    enabled = forms.BooleanField(required=False, label="Recharge automatically")
    threshold = forms.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=0,
        required=False,
        label="When the balance is below (USD)",
    )
    amount = forms.DecimalField(
        max_digits=14, decimal_places=2, min_value=0, required=False, label="Add (USD)"
    )
    window_minutes = forms.IntegerField(
        min_value=5,
        max_value=30 * 24 * 60,
        initial=60,
        required=False,
        label="At most once every (minutes)",
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("enabled"):
            for field in ("threshold", "amount"):
                if field in data and data[field] is None:
                    self.add_error(field, "This field is required to turn auto-recharge on.")
        return data
