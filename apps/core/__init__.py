"""Shared infrastructure (not a Django app): Redis clients and channel names (redis.py),
the hot-path pipelined client (fastredis.py), the ledger shards names are tagged by
(shards.py)."""
