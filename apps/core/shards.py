"""Ledger shards: which Redis names a tenant's hot-path state and usage events take.

A Lua script may touch only keys of one cluster slot, and settlement both moves the
tenant's counters and appends its usage event. So every tenant belongs to one of
LEDGER_SHARDS shards (``tenant_id % LEDGER_SHARDS``, fixed: changing the count moves
tenants to other counters and streams), and the names its scripts touch carry the shard's
hash tag ``{s<n>}``: its limit counters (``tg:lim:{s3}:k:12:rpm``), its prepaid balance
(``tg:bal:{s3}:t:12``) and its shard's usage stream (``<LEDGER_STREAM>{s3}``). The ingest
reads every shard's stream.

With one shard and a single Redis (the default there) nothing is tagged: the names are
the untagged ones of before and the usage stream is LEDGER_STREAM itself.
"""

from django.conf import settings


def sharded() -> bool:
    """Whether names carry a shard's hash tag (a cluster, or more than one shard)."""
    return settings.LEDGER_SHARDS > 1 or settings.REDIS_CLUSTER


def shard_of(tenant_id: int) -> int:
    return tenant_id % settings.LEDGER_SHARDS


def shard_tag(tenant_id: int) -> str:
    """The hash tag of the tenant's shard, "" when names are not tagged."""
    return f"{{s{tenant_id % settings.LEDGER_SHARDS}}}" if sharded() else ""


def usage_stream(tenant_id: int, base: str | None = None) -> str:
    """The usage stream the tenant's events are appended to."""
    return (base or settings.LEDGER_STREAM) + shard_tag(tenant_id)


def usage_streams(base: str | None = None) -> list[str]:
    """Every usage stream the ingest reads: each shard's and, when sharded, the untagged
    one too (events appended before sharding was turned on, or by an older gateway)."""
    base = base or settings.LEDGER_STREAM
    if not sharded():
        return [base]
    return [*(f"{base}{{s{n}}}" for n in range(settings.LEDGER_SHARDS)), base]
