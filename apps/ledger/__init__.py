"""The exact ledger of usage: one UsageRecord per request.

models.py      UsageRecord (monthly partitions on PostgreSQL, migration 0011)
events.py      UsageEvent, the message the gateway appends to the usage stream
spool.py       the web process's local spool when Redis is unreachable
services.py    usage_ingest: stream → ledger, exactly once per (request_id, created_at)
partitions.py  partitions_ensure / partitions_retire: months made ahead, dropped after retention
selectors.py   reads
tasks.py       ledger.ingest and ledger.partitions (beat)
"""
