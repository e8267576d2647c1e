from tests.billing.billing_support import stream, world  # noqa: F401 - fixtures
