from django.apps import AppConfig


class LimitsConfig(AppConfig):
    name = "apps.limits"
    label = "limits"

    def ready(self) -> None:
        from apps.limits.balances import balance_credit
        from apps.wallet.services import balance_entry_hook

        # Journal credits reach the Redis balance admission reserves against.
        balance_entry_hook(balance_credit)
