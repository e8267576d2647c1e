from django.db import transaction

from apps.core.redis import CATALOG_INVALIDATE_CHANNEL, publish


def catalog_invalidate() -> None:
    """Tell every gateway process to reload the catalog once this transaction commits."""
    transaction.on_commit(lambda: publish(CATALOG_INVALIDATE_CHANNEL, "*"))
