"""Usage ingest: Redis streams → Postgres, exactly once per request id.

Each ledger shard has its stream (apps/core/shards.py), each stream its consumer group;
a batch reads every one. Entries are read through a consumer group, inserted with ON CONFLICT (request_id,
created_at) DO NOTHING (the event's own time: the ledger's partition key), and acknowledged (then deleted) only after the transaction commits. Entries a
dead consumer left pending are reclaimed after LEDGER_RECLAIM_IDLE_MS. An entry that can
never be inserted goes to a dead-letter stream instead of blocking the rest.

On PostgreSQL a batch is one COPY of plain rows into a temporary table and one
INSERT … SELECT … ON CONFLICT DO NOTHING from it (timestamps and amounts converted by the
server; an amount is its pico-units times 10⁻¹², exact in numeric): no model instance per event, three statements per batch
(bench/ingest_bench.py). Elsewhere (the embedded SQLite default) rows go through
bulk_create. A batch PostgreSQL refuses (a key deleted before its usage landed, a value it
cannot store) is retried record by record, the bad ones set aside.
"""

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import redis
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Q

from apps.billing.pricing import PriceBook, billed_tokens, pico_to_decimal
from apps.core.redis import sync_client
from apps.core.shards import usage_streams
from apps.gateway.protocol.attribution import AttributionInvalid, end_user_checked, tags_validate
from apps.keys.models import ApiKey
from apps.ledger.events import UsageEvent
from apps.ledger.models import UsageRecord

log = logging.getLogger(__name__)
DEAD_LETTER_SUFFIX = ":dead"


def usage_stream_ensure_group(client: redis.Redis | None = None, stream: str | None = None) -> None:
    """The ingest's consumer group on ``stream`` (default: every usage stream)."""
    client = client or sync_client()
    for name in [stream] if stream else usage_streams():
        try:
            client.xgroup_create(name, settings.LEDGER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _decode(entries: Sequence) -> tuple[list[bytes], list[UsageEvent], list[tuple[bytes, bytes]]]:
    """(entry ids, the events, undecodable entries). Every event leaves here priced: its
    ``cost``/``price`` pico-unit integers set (``_price`` prices those an older gateway
    sent without amounts)."""
    ids, events, unpriced, poison = [], [], [], []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = fields.get(b"e", b"")
        try:
            event = UsageEvent.from_bytes(raw)
            _check(event)
            if event.price is None or event.cost is None:
                unpriced.append(event)
            else:
                event.cost, event.price = _pico(event.cost), _pico(event.price)
        except (orjson.JSONDecodeError, TypeError, ValueError, OverflowError, OSError):
            poison.append((entry_id, raw))
            continue
        events.append(event)
    if unpriced:
        _price(unpriced)
    return ids, events, poison


# numeric(24, 12): amounts below 10**12 currency units, in pico-units.
_PICO_LIMIT = 10**24


def _pico(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError("an amount is a decimal string of pico-units")
    pico = int(value)
    if not 0 <= pico < _PICO_LIMIT:
        raise ValueError("amount out of range")
    return pico


def _check(event: UsageEvent) -> None:
    """Types the row needs, so one bad event is poison rather than a failed batch."""
    for name in (
        "request_id",
        "model",
        "requested_model",
        "deployment",
        "protocol",
        "endpoint",
        "outcome",
    ):
        value = getattr(event, name)
        if not isinstance(value, str):
            raise TypeError(f"{name} is not a string")
        if "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise ValueError(f"{name} holds NUL")
    for name in ("tenant_id", "api_key_id", "status", "latency_ms"):
        if isinstance(getattr(event, name), bool) or not isinstance(getattr(event, name), int):
            raise TypeError(f"{name} is not an integer")
    datetime.fromtimestamp(event.created_at, tz=UTC)  # raises on a bad timestamp
    _attribution_checked(event)


def _attribution_checked(event: UsageEvent) -> None:
    """The gateway checked the end user and tags; an event that still carries bad ones
    (from the spool or an older gateway) keeps its usage and loses only those, so a bad
    tag never costs a billed request."""
    project_id = event.project_id
    if project_id is not None and (isinstance(project_id, bool) or not isinstance(project_id, int)):
        log.warning("usage event %s: project_id dropped (not an id)", event.request_id)
        event.project_id = None
    if event.end_user != "":
        try:
            end_user_checked(event.end_user, "end_user")
        except AttributionInvalid:
            log.warning("usage event %s: end_user dropped (invalid)", event.request_id)
            event.end_user = ""
    if event.tags is not None:
        try:
            event.tags = tags_validate(event.tags, "tags") or None
        except AttributionInvalid:
            log.warning("usage event %s: tags dropped (invalid)", event.request_id)
            event.tags = None


def _price(events: list[UsageEvent]) -> None:
    """Price events that carried no amounts, at the rules in force when they were made
    (one load a batch). An event without a rule for its model costs 0 and keeps its rule
    ids None (the flag reconciliation reports)."""
    book = PriceBook.load(
        model_names={e.model for e in events}, tenant_ids={e.tenant_id for e in events}
    )
    for event in events:
        created = datetime.fromtimestamp(event.created_at, tz=UTC)
        quote = book.tariff(event.tenant_id, event.model, created).quote(
            billed_tokens(event), event.service_tier or None, event.byok is True
        )
        event.cost, event.price = quote.cost, quote.price
        event.cost_rule_id, event.rate_card_id, event.price_rule_id = quote[2:]


def _record(event: UsageEvent) -> UsageRecord:
    """A priced event as a model instance (the bulk_create path)."""
    return UsageRecord(
        request_id=event.request_id,
        tenant_id=event.tenant_id,
        api_key_id=event.api_key_id,
        model=event.model[:128],
        requested_model=_requested(event),
        deployment=event.deployment[:300],
        protocol=event.protocol,
        endpoint=event.endpoint[:64],
        stream=event.stream is True,
        status=event.status,
        outcome=event.outcome[:40],
        prompt_tokens=_count(event.prompt_tokens),
        completion_tokens=_count(event.completion_tokens),
        cached_tokens=_count(event.cached_tokens),
        tokens_estimated=event.tokens_estimated is True,
        cache_write_5m_tokens=_count(event.cache_write_5m_tokens),
        cache_write_1h_tokens=_count(event.cache_write_1h_tokens),
        reasoning_tokens=_count(event.reasoning_tokens),
        service_tier=(event.service_tier or "")[:32],
        byok=event.byok is True,
        prepaid=event.prepaid is True,
        project_id=event.project_id,
        end_user=event.end_user,
        tags=event.tags,
        prompt_tokens_bound=_bound(event.prompt_tokens_bound),
        completion_tokens_bound=_bound(event.completion_tokens_bound),
        latency_ms=max(event.latency_ms, 0),
        ttft_ms=event.ttft_ms,
        content_filter=event.content_filter,
        created_at=event_time(event.created_at),
        cost=pico_to_decimal(event.cost),
        price=pico_to_decimal(event.price),
        cost_rule_id=event.cost_rule_id,
        rate_card_id=event.rate_card_id,
        price_rule_id=event.price_rule_id,
    )


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_UNIX = 946_684_800.0


def event_time(epoch: float) -> datetime:
    """The event's timestamp exactly as PostgreSQL's to_timestamp() (the COPY path) makes
    it: the same float arithmetic, rounded half-even to the microsecond. Both insert paths
    then write the same created_at, which is half of the ledger's unique key."""
    return _PG_EPOCH + timedelta(microseconds=round((epoch - _PG_EPOCH_UNIX) * 1_000_000.0))


def _requested(event: UsageEvent) -> str:
    """Stored always: the model asked for, which is ``model`` unless a fallback served."""
    return (event.requested_model or event.model)[:128]


def _count(value: int) -> int:
    # The token columns are 32-bit: an event from an older gateway (or the spool) with an
    # absurd count must still land rather than fail its whole batch.
    return min(max(value, 0), 2**31 - 1)


def _bound(value: int | None) -> int | None:
    return None if value is None else min(max(value, 0), 2**63 - 1)


# The COPY path: the batch's rows as the server takes them, converted by its INSERT.
_BATCH_TABLE = "ledger_ingest_batch"
_BATCH_COLUMNS = (
    ("request_id", "text"),
    ("tenant_id", "bigint"),
    ("api_key_id", "bigint"),
    ("model", "text"),
    ("requested_model", "text"),
    ("deployment", "text"),
    ("protocol", "text"),
    ("endpoint", "text"),
    ("stream", "boolean"),
    ("status", "integer"),
    ("outcome", "text"),
    ("prompt_tokens", "integer"),
    ("completion_tokens", "integer"),
    ("cached_tokens", "integer"),
    ("tokens_estimated", "boolean"),
    ("cache_write_5m_tokens", "integer"),
    ("cache_write_1h_tokens", "integer"),
    ("reasoning_tokens", "integer"),
    ("service_tier", "text"),
    ("byok", "boolean"),
    ("prepaid", "boolean"),
    ("project_id", "bigint"),
    ("end_user", "text"),
    ("tags", "jsonb"),
    ("prompt_tokens_bound", "bigint"),
    ("completion_tokens_bound", "bigint"),
    ("latency_ms", "integer"),
    ("ttft_ms", "integer"),
    ("content_filter", "jsonb"),
    ("cost_rule_id", "bigint"),
    ("rate_card_id", "bigint"),
    ("price_rule_id", "bigint"),
    ("created_epoch", "double precision"),
    ("cost_pico", "numeric"),
    ("price_pico", "numeric"),
)
_PLAIN = [name for name, _type in _BATCH_COLUMNS[:-3]]
_CREATE_BATCH = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_BATCH_TABLE} ("
    + ", ".join(f"{name} {kind}" for name, kind in _BATCH_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_COPY_BATCH = f"COPY {_BATCH_TABLE} ({', '.join(n for n, _ in _BATCH_COLUMNS)}) FROM STDIN"
_INSERT_BATCH = (
    f"INSERT INTO {UsageRecord._meta.db_table} ({', '.join(_PLAIN)}, created_at, ingested_at,"
    f" cost, price) SELECT {', '.join(_PLAIN)}, to_timestamp(created_epoch), clock_timestamp(),"
    " cost_pico * 0.000000000001, price_pico * 0.000000000001"
    f" FROM {_BATCH_TABLE} ON CONFLICT (request_id, created_at) DO NOTHING"
)


def _row(event: UsageEvent) -> tuple:
    content_filter = event.content_filter
    return (
        event.request_id,
        event.tenant_id,
        event.api_key_id,
        event.model[:128],
        _requested(event),
        event.deployment[:300],
        event.protocol[:16],
        event.endpoint[:64],
        event.stream is True,
        event.status,
        event.outcome[:40],
        _count(event.prompt_tokens),
        _count(event.completion_tokens),
        _count(event.cached_tokens),
        event.tokens_estimated is True,
        _count(event.cache_write_5m_tokens),
        _count(event.cache_write_1h_tokens),
        _count(event.reasoning_tokens),
        (event.service_tier or "")[:32],
        event.byok is True,
        event.prepaid is True,
        event.project_id,
        event.end_user,
        None if event.tags is None else orjson.dumps(event.tags).decode(),
        _bound(event.prompt_tokens_bound),
        _bound(event.completion_tokens_bound),
        max(event.latency_ms, 0),
        event.ttft_ms,
        None if content_filter is None else orjson.dumps(content_filter).decode(),
        event.cost_rule_id,
        event.rate_card_id,
        event.price_rule_id,
        event.created_at,
        event.cost,
        event.price,
    )


def _copy_insert(events: list[UsageEvent]) -> None:
    rows = [_row(event) for event in events]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CREATE_BATCH)
        with connection.wrap_database_errors, cursor.cursor.copy(_COPY_BATCH) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(_INSERT_BATCH)


def _insert(events: list[UsageEvent]) -> list[UsageEvent]:
    """Insert, skipping request ids already in the ledger; returns events that cannot land."""
    try:
        if connection.vendor == "postgresql":
            _copy_insert(events)
        else:
            with transaction.atomic():
                UsageRecord.objects.bulk_create([_record(e) for e in events], ignore_conflicts=True)
        return []
    except (IntegrityError, DataError, ValueError):
        # e.g. a key deleted before its usage landed: insert one by one, set aside the bad.
        rejected = []
        for event in events:
            try:
                with transaction.atomic():
                    UsageRecord.objects.bulk_create([_record(event)], ignore_conflicts=True)
            except (IntegrityError, DataError, ValueError) as exc:
                log.warning("usage event %s cannot land: %s", event.request_id, exc)
                rejected.append(event)
        return rejected


def _touch_keys(events: list[UsageEvent]) -> None:
    latest: dict[int, float] = {}
    for event in events:
        if event.created_at > latest.get(event.api_key_id, float("-inf")):
            latest[event.api_key_id] = event.created_at
    for key_id, epoch in latest.items():
        used_at = datetime.fromtimestamp(epoch, tz=UTC)
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=used_at), id=key_id
        ).update(last_used_at=used_at)


def usage_ingest_batch(*, consumer: str, count: int | None = None, client=None) -> int:
    """Ingest one batch of each usage stream (every ledger shard's, apps/core/shards.py);
    returns the number of stream entries handled."""
    client = client or sync_client()
    count = count or settings.LEDGER_BATCH_SIZE
    return sum(
        _stream_ingest_batch(client, stream, consumer=consumer, count=count)
        for stream in usage_streams()
    )


def _stream_ingest_batch(client, stream: str, *, consumer: str, count: int) -> int:
    group = settings.LEDGER_GROUP
    usage_stream_ensure_group(client, stream)
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
    ids, events, poison = _decode(entries)
    rejected = _insert(events) if events else []
    if events:
        _touch_keys([e for e in events if e not in rejected])
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
