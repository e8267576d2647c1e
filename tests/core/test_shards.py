"""Ledger shards: a tenant's names share one hash tag; untagged on one shard of a single
Redis, as before sharding."""

from redis.crc import key_slot

from apps.core.shards import shard_tag, usage_stream, usage_streams
from apps.limits.limiter import balance_keys, scope_keys


def test_one_shard_on_a_single_redis_keeps_the_untagged_names(settings):
    settings.LEDGER_SHARDS, settings.REDIS_CLUSTER = 1, False
    assert usage_streams() == [settings.LEDGER_STREAM]


def test_one_shard_keeps_the_untagged_stream(settings):
    settings.LEDGER_SHARDS, settings.REDIS_CLUSTER = 1, False
    assert usage_stream(12) == settings.LEDGER_STREAM


def test_one_shard_keeps_the_untagged_balance(settings):
    settings.LEDGER_SHARDS, settings.REDIS_CLUSTER = 1, False
    assert balance_keys(12)[0] == "tg:bal:t:12"


def test_a_tenant_belongs_to_its_id_modulo_the_shards(settings):
    settings.LEDGER_SHARDS = 16
    assert shard_tag(35) == "{s3}"


def test_every_shard_has_a_stream_and_the_untagged_one_is_read_too(settings):
    settings.LEDGER_SHARDS, settings.LEDGER_STREAM = 4, "u"
    assert usage_streams() == ["u{s0}", "u{s1}", "u{s2}", "u{s3}", "u"]


def test_a_tenants_counters_balance_and_stream_share_one_slot(settings):
    settings.LEDGER_SHARDS = 16
    tag = shard_tag(35)
    names = [*scope_keys("k:9", "m202612", tag), *balance_keys(35), usage_stream(35)]
    assert {key_slot(name.encode()) for name in names} == {key_slot(b"s3")}


def test_a_cluster_tags_even_one_shard(settings):
    settings.LEDGER_SHARDS, settings.REDIS_CLUSTER = 1, True
    assert shard_tag(7) == "{s0}"
