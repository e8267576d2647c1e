"""The event types a webhook endpoint may subscribe to (``["*"]``: every type)."""

BUDGET_THRESHOLD = "budget.threshold_reached"
BALANCE_BELOW = "balance.below_threshold"
AUTO_RECHARGE_FAILED = "balance.auto_recharge_failed"
TEST = "webhook.test"

EVENT_TYPES: dict[str, str] = {
    BUDGET_THRESHOLD: "a budget (the tenant's or a key's) reached a percentage of its amount",
    BALANCE_BELOW: "the prepaid balance fell below an amount",
    AUTO_RECHARGE_FAILED: "an automatic recharge of the prepaid balance failed",
    TEST: "a test event sent from the dashboard or the API",
}
ALL = "*"
