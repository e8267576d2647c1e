"""Usage ingest: Redis stream → Postgres, exactly once per request id.

Entries are read through a consumer group, inserted with ON CONFLICT (request_id) DO
NOTHING, and acknowledged (then deleted) only after the transaction commits. Entries a
dead consumer left pending are reclaimed after LEDGER_RECLAIM_IDLE_MS. An entry that can
never be inserted goes to a dead-letter stream instead of blocking the rest.
"""

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from apps.billing.pricing import PriceBook, billed_tokens, pico_to_decimal
from apps.core.redis import sync_client
from apps.keys.models import ApiKey
from apps.ledger.events import UsageEvent
from apps.ledger.models import UsageRecord

log = logging.getLogger(__name__)
DEAD_LETTER_SUFFIX = ":dead"


def usage_stream_ensure_group(client: redis.Redis | None = None) -> None:
    client = client or sync_client()
    try:
        client.xgroup_create(settings.LEDGER_STREAM, settings.LEDGER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _record(event: UsageEvent) -> UsageRecord:
    return UsageRecord(
        request_id=event.request_id,
        tenant_id=event.tenant_id,
        api_key_id=event.api_key_id,
        model=event.model[:128],
        deployment=event.deployment[:300],
        protocol=event.protocol,
        endpoint=event.endpoint[:64],
        stream=event.stream,
        status=event.status,
        outcome=event.outcome[:40],
        prompt_tokens=_count(event.prompt_tokens),
        completion_tokens=_count(event.completion_tokens),
        cached_tokens=_count(event.cached_tokens),
        tokens_estimated=event.tokens_estimated,
        cache_write_5m_tokens=_count(event.cache_write_5m_tokens),
        cache_write_1h_tokens=_count(event.cache_write_1h_tokens),
        reasoning_tokens=_count(event.reasoning_tokens),
        service_tier=(event.service_tier or "")[:32],
        byok=event.byok is True,
        prepaid=event.prepaid is True,
        prompt_tokens_bound=_bound(event.prompt_tokens_bound),
        completion_tokens_bound=_bound(event.completion_tokens_bound),
        latency_ms=max(event.latency_ms, 0),
        ttft_ms=event.ttft_ms,
        content_filter=event.content_filter,
        created_at=datetime.fromtimestamp(event.created_at, tz=UTC),
    )


def _count(value: int) -> int:
    # The token columns are 32-bit: an event from an older gateway (or the spool) with an
    # absurd count must still land rather than fail its whole batch.
    return min(max(value, 0), 2**31 - 1)


def _bound(value: int | None) -> int | None:
    return None if value is None else min(max(value, 0), 2**63 - 1)


def _decode(
    entries: Sequence,
) -> tuple[list[bytes], list[UsageRecord], list[UsageRecord], list[tuple[bytes, bytes]]]:
    """(entry ids, records, the records still to price, undecodable entries)."""
    ids, records, unpriced, poison = [], [], [], []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = fields.get(b"e", b"")
        try:
            event = UsageEvent.from_bytes(raw)
            record = _record(event)
            priced = _amounts(record, event)
        except (orjson.JSONDecodeError, TypeError, ValueError, OverflowError):
            poison.append((entry_id, raw))
            continue
        records.append(record)
        if not priced:
            unpriced.append(record)
    return ids, records, unpriced, poison


def _amounts(record: UsageRecord, event: UsageEvent) -> bool:
    """The event's cost and price as the gateway settled them (the same amounts its
    answer showed and its budget counted); False when it carries none (an older
    gateway's event: ``_price`` prices it)."""
    if event.price is None or event.cost is None:
        return False
    record.cost = pico_to_decimal(int(event.cost))
    record.price = pico_to_decimal(int(event.price))
    record.cost_rule_id = event.cost_rule_id
    record.rate_card_id = event.rate_card_id
    record.price_rule_id = event.price_rule_id
    return True


def _price(records: list[UsageRecord]) -> None:
    """Price records whose event carried no amounts, at the rules in force at their
    created_at (one load a batch). A record without a rule for its model costs 0 and
    keeps its rule ids NULL (the flag reconciliation reports)."""
    book = PriceBook.load(
        model_names={r.model for r in records}, tenant_ids={r.tenant_id for r in records}
    )
    for record in records:
        quote = book.tariff(record.tenant_id, record.model, record.created_at).quote(
            billed_tokens(record), record.service_tier or None, record.byok
        )
        record.cost = pico_to_decimal(quote.cost)
        record.price = pico_to_decimal(quote.price)
        record.cost_rule_id, record.rate_card_id, record.price_rule_id = quote[2:]


def _insert(records: list[UsageRecord]) -> list[UsageRecord]:
    """Insert, skipping request ids already in the ledger; returns rows that cannot land."""
    try:
        with transaction.atomic():
            UsageRecord.objects.bulk_create(records, ignore_conflicts=True)
        return []
    except IntegrityError:
        # e.g. a key deleted before its usage landed: insert one by one, set aside the bad.
        rejected = []
        for record in records:
            try:
                with transaction.atomic():
                    UsageRecord.objects.bulk_create([record], ignore_conflicts=True)
            except IntegrityError:
                rejected.append(record)
        return rejected


def _touch_keys(records: list[UsageRecord]) -> None:
    latest: dict[int, datetime] = {}
    for record in records:
        if record.api_key_id not in latest or record.created_at > latest[record.api_key_id]:
            latest[record.api_key_id] = record.created_at
    for key_id, used_at in latest.items():
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=used_at), id=key_id
        ).update(last_used_at=used_at)


def usage_ingest_batch(*, consumer: str, count: int | None = None, client=None) -> int:
    """Ingest one batch; returns the number of stream entries handled."""
    client = client or sync_client()
    count = count or settings.LEDGER_BATCH_SIZE
    stream, group = settings.LEDGER_STREAM, settings.LEDGER_GROUP
    usage_stream_ensure_group(client)
    # First our own unacknowledged entries (a failed insert is retried at once), then
    # those a dead consumer left behind, then new ones.
    own = client.xreadgroup(group, consumer, {stream: "0"}, count=count)
    entries = [e for _name, stream_entries in own or () for e in stream_entries if e[1]]
    reclaimed = client.xautoclaim(
        stream,
        group,
        consumer,
        min_idle_time=settings.LEDGER_RECLAIM_IDLE_MS,
        start_id="0-0",
        count=count,
    )[1]
    seen = {e[0] for e in entries}
    entries.extend(e for e in reclaimed if e[1] and e[0] not in seen)
    if len(entries) < count:
        fresh = client.xreadgroup(group, consumer, {stream: ">"}, count=count - len(entries))
        for _name, stream_entries in fresh or ():
            entries.extend(stream_entries)
    # Entries deleted while pending come back from XAUTOCLAIM without fields: ack them.
    gone = [e[0] for e in reclaimed if not e[1]]
    if not entries:
        if gone:
            client.xack(stream, group, *gone)
        return 0
    ids, records, unpriced, poison = _decode(entries)
    if unpriced:
        _price(unpriced)
    rejected = _insert(records) if records else []
    if records:
        _touch_keys([r for r in records if r not in rejected])
    dead = [(eid, raw) for eid, raw in poison] + [
        (b"", orjson.dumps({"request_id": r.request_id})) for r in rejected
    ]
    pipe = client.pipeline(transaction=False)
    for _eid, raw in dead:
        pipe.xadd(stream + DEAD_LETTER_SUFFIX, {"e": raw})
    pipe.xack(stream, group, *ids, *gone)
    pipe.xdel(stream, *ids)
    pipe.execute()
    if dead:
        log.error(
            "usage ingest: %d entries could not be inserted; moved to %s",
            len(dead),
            stream + DEAD_LETTER_SUFFIX,
        )
    return len(ids)


def usage_ingest(*, consumer: str, max_seconds: float = 5.0) -> int:
    """Drain the stream in batches for up to max_seconds."""
    deadline = time.monotonic() + max_seconds
    total = 0
    while time.monotonic() < deadline:
        handled = usage_ingest_batch(consumer=consumer)
        total += handled
        if handled == 0:
            break
    return total
