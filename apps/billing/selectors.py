"""Reads for tenant reports. Every function takes the tenant and reads through
``for_tenant(tenant)``: nothing here can return another tenant's rows."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from typing import Any

from django.db import connections
from django.db.models import BigIntegerField, Count, F, Func, Q, QuerySet, Sum, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, TruncDay, TruncHour, TruncMinute

from apps.billing.models import (
    MONEY,
    EndUserDayTotal,
    EndUserRollup,
    RateCard,
    Statement,
    TagRollup,
    UsageRollup,
)
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.projects.models import Project
from apps.tenants.models import Tenant

BUCKET_WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}


# A report's rows come back as the database sends them, without a Python conversion per
# value: a month by end user is 62,000 rows, and loading a timestamp or running Django's
# int()/Decimal() converters per row cost more than the query.
class _Loaded:
    @property
    def convert_value(self):  # noqa: ANN201 - Django's converter hook
        return self._convert_value_noop


class _IntSum(_Loaded, Sum):
    """SUM of an integer column as an integer (PostgreSQL's is numeric)."""

    template = "CAST(%(function)s(%(distinct)s%(expressions)s) AS bigint)"
    output_field = BigIntegerField()


class _DecimalSum(_Loaded, Sum):
    """SUM of a numeric column (the database driver's Decimal already)."""


class _EpochSeconds(_Loaded, Func):
    """A UTC timestamp as whole seconds since the epoch (usage_aggregate maps each
    bucket's value back to its datetime once)."""

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra):  # noqa: ANN201
        return self.as_sql(
            compiler, connection, template="CAST(EXTRACT(EPOCH FROM %(expressions)s) AS bigint)"
        )

    def as_sqlite(self, compiler, connection, **extra):  # noqa: ANN201
        # julianday (days since noon, 4714 BC) rather than strftime('%s'): a percent sign
        # would be taken for a query parameter.
        template = "CAST(ROUND((julianday(%(expressions)s) - 2440587.5) * 86400) AS integer)"
        return self.as_sql(compiler, connection, template=template)


_SUMS = {
    "num_model_requests": _IntSum("requests"),
    "input_tokens": _IntSum("prompt_tokens"),
    "output_tokens": _IntSum("completion_tokens"),
    "input_cached_tokens": _IntSum("cached_tokens"),
    "price": _DecimalSum("price"),
}
# A rollup row's own measures, when its rows are the report's groups (the groups name its
# whole key: nothing to add up).
_COLUMNS = {name: F(sum_.source_expressions[0].name) for name, sum_ in _SUMS.items()}
# The groups that name the whole key of a rollup's day rows (besides tenant and day).
_GRAIN = {
    "end_user_total": {"project_id", "user_id"},
    "end_user": {"project_id", "user_id", "model"},
}
_LEDGER_SUMS = {
    "num_model_requests": Count("id"),
    "input_tokens": _IntSum("prompt_tokens"),
    "output_tokens": _IntSum("completion_tokens"),
    "input_cached_tokens": _IntSum("cached_tokens"),
    "price": _DecimalSum("price"),
}
GROUP_FIELDS = {
    "model": "model",
    "api_key_id": "api_key_id",
    "project_id": "g_project",
    "user_id": "end_user",
}
# group_by=tag:<key>: one group per value of the tag <key> (a Tollgate extension).
TAG_GROUP = "tag:"
_LEDGER_BUCKETS = {"1m": TruncMinute, "1h": TruncHour, "1d": TruncDay}

RECORD_COLUMNS = (
    "request_id",
    "created_at",
    "api_key_id",
    "model",
    "requested_model",
    "deployment",
    "protocol",
    "endpoint",
    "stream",
    "status",
    "outcome",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "service_tier",
    "byok",
    "latency_ms",
    "ttft_ms",
    "price",
    # Attribution, after the older columns so their positions stay.
    "project_id",
    "end_user",
    "tags",
)
# The CSV headers of those columns: a tenant's "cost" is what it pays, the ledger's price
# (as ``usage.cost`` on answers); the operator's cost is never shown to a tenant.
RECORD_HEADERS = tuple("cost" if c == "price" else c for c in RECORD_COLUMNS)
ROLLUP_COLUMNS = (
    "bucket_start",
    "api_key_id",
    "model",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "price",
    # After the older columns so their positions stay.
    "project_id",
)
ROLLUP_HEADERS = tuple("cost" if c == "price" else c for c in ROLLUP_COLUMNS)


def api_key_ids_for_tenant(
    *, tenant: Tenant, ids: Sequence[int], project_ids: Sequence[int] = ()
) -> set[int]:
    """Those of ``ids`` that are the tenant's keys (``project_ids``: of those projects)."""
    keys = ApiKey.objects.filter(tenant=tenant, id__in=ids)
    if project_ids:
        keys = keys.filter(project_id__in=project_ids)
    return set(keys.values_list("id", flat=True))


def project_ids_for_tenant(*, tenant: Tenant, ids: Sequence[int]) -> set[int]:
    return set(Project.objects.for_tenant(tenant).filter(id__in=ids).values_list("id", flat=True))


def ledger_project() -> Coalesce:
    """The project a ledger row counts in: its own, or (a row recorded before projects)
    its key's, which the projects migration put in the tenant's default project."""
    return Coalesce("project_id", "api_key__project_id")


def _tag_group_name(n: int) -> str:
    return f"g_tag_{n}"


def usage_source(
    *,
    width: str,
    group_by: Sequence[str] = (),
    api_key_ids: Sequence[int] = (),
    models: Sequence[str] = (),
    project_ids: Sequence[int] = (),
    user_ids: Sequence[str] = (),
    tags: Mapping[str, Sequence[str]] | None = None,
    **_ignored: Any,
) -> str:
    """Which table answers a report: ``rollup`` (UsageRollup: hour/day × project × key ×
    model), ``end_user`` (EndUserRollup: day × project × end user × model),
    ``end_user_total`` (EndUserDayTotal: day × project × end user, without a model in the
    groups or filters), ``tag``
    (TagRollup: day × project × key × model × one tag's value) or ``ledger``.

    Read from the ledger itself (its indexes, ledger 0010): 1m buckets; end users or tags
    in 1h buckets (their rollups are daily); an end user together with a key (group or
    filter) or with a tag; more than one tag key among the groups and filters (the
    rollups hold each tag on its own, not their combinations).
    """
    tag_keys = {g.removeprefix(TAG_GROUP) for g in group_by if g.startswith(TAG_GROUP)}
    tag_keys |= set(tags or {})
    users = "user_id" in group_by or bool(user_ids)
    if width == "1m":
        return "ledger"
    if not users and not tag_keys:
        return "rollup"
    if width != "1d":
        return "ledger"
    if users and not tag_keys and "api_key_id" not in group_by and not api_key_ids:
        if set(group_by) <= {"user_id", "project_id"} and not models:
            return "end_user_total"
        return "end_user"
    if tag_keys and not users and len(tag_keys) == 1:
        return "tag"
    return "ledger"


def usage_aggregate_queryset(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    width: str,
    group_by: Sequence[str] = (),
    api_key_ids: Sequence[int] = (),
    models: Sequence[str] = (),
    project_ids: Sequence[int] = (),
    user_ids: Sequence[str] = (),
    tags: Mapping[str, Sequence[str]] | None = None,
) -> QuerySet:
    """Totals per bucket (and per group) over [start, end), bucket-aligned bounds.

    ``group_by`` holds ``model``, ``api_key_id``, ``project_id``, ``user_id`` (the end
    user) and ``tag:<key>`` (one group per value of that tag). ``tags`` filters
    ``{key: [values]}``: a row carries one of the values of every key named.

    The table read is usage_source's. From TagRollup, a ``tag:<key>`` group without a
    filter on that key has no row for the records without the tag: usage_aggregate adds
    that group (the rollups' totals less the tagged ones).
    """
    tag_keys = [g.removeprefix(TAG_GROUP) for g in group_by if g.startswith(TAG_GROUP)]
    plain = [g for g in group_by if not g.startswith(TAG_GROUP)]
    source = usage_source(
        width=width,
        group_by=group_by,
        api_key_ids=api_key_ids,
        models=models,
        project_ids=project_ids,
        user_ids=user_ids,
        tags=tags,
    )
    tag_filters = tags or {}
    if source == "ledger":
        rows = UsageRecord.objects.for_tenant(tenant).filter(
            created_at__gte=start, created_at__lt=end
        )
        bucket = _LEDGER_BUCKETS[width]("created_at", tzinfo=UTC)
        sums = _LEDGER_SUMS
        if "project_id" in plain or project_ids:
            rows = rows.annotate(g_project=ledger_project())
    else:
        if source == "rollup":
            granularity = (
                UsageRollup.Granularity.HOUR if width == "1h" else UsageRollup.Granularity.DAY
            )
            rows = UsageRollup.objects.for_tenant(tenant).filter(granularity=granularity)
        elif source == "end_user":
            rows = EndUserRollup.objects.for_tenant(tenant)
        elif source == "end_user_total":
            rows = EndUserDayTotal.objects.for_tenant(tenant)
        else:
            (key,) = {*tag_keys, *tag_filters}
            rows = TagRollup.objects.for_tenant(tenant).filter(tag_key=key)
            if key in tag_filters:
                rows = rows.filter(tag_value__in=tag_filters[key])
            tag_filters = {}
        rows = rows.filter(bucket_start__gte=start, bucket_start__lt=end)
        bucket = F("bucket_start")
        rows = rows.annotate(g_project=F("project_id"))
        sums = _COLUMNS if _GRAIN.get(source) == set(plain) else _SUMS
    if api_key_ids:
        rows = rows.filter(api_key_id__in=api_key_ids)
    if models:
        rows = rows.filter(model__in=models)
    if project_ids:
        rows = rows.filter(g_project__in=project_ids)
    if user_ids:
        rows = rows.filter(end_user__in=user_ids)
    for n, (key, values) in enumerate(tag_filters.items()):
        if connections[rows.db].vendor == "postgresql":  # jsonb @>, which its index serves
            either = Q()
            for value in values:
                either |= Q(tags__contains={key: value})
            rows = rows.filter(either)
        else:  # SQLite (the embedded default) has no JSON containment
            name = f"_tag_filter_{n}"
            # Cast: a key transform's own IN would read the values as JSON there.
            rows = rows.alias(**{name: Cast(KeyTextTransform(key, "tags"), TextField())})
            rows = rows.filter(**{f"{name}__in": list(values)})
    fields = [GROUP_FIELDS[g] for g in plain]
    for n, key in enumerate(tag_keys):
        value = F("tag_value") if source == "tag" else KeyTextTransform(key, "tags")
        rows = rows.annotate(**{_tag_group_name(n): value})
        fields.append(_tag_group_name(n))
    rows = rows.annotate(bucket=_EpochSeconds(bucket)).order_by().values("bucket", *fields)
    # Ordered by the timestamp, not its epoch: a rollup's index on (tenant, bucket_start, …)
    # then hands the rows over in (nearly) group order, without a sort of them all.
    if source == "end_user_total":  # its report index's order: the end user, then project
        fields.sort(key=lambda field: field != "end_user")
    return rows.annotate(**sums).order_by(bucket, *fields)


_MEASURE_NAMES = tuple(_SUMS)
_ZERO = Decimal(0)


def _untagged_rows(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    plain: Sequence[str],
    tagged: list[dict[str, Any]],
    **filters: Any,
) -> list[dict[str, Any]]:
    """The group of the records without the tag, for a ``tag:<key>`` group answered by
    TagRollup: the day rollups' totals (same groups and filters) less the tagged totals;
    a group is there when some of its records lack the tag (requests left)."""
    totals = usage_aggregate_queryset(
        tenant=tenant, start=start, end=end, width="1d", group_by=plain, **filters
    )
    fields = [GROUP_FIELDS[g] for g in plain]
    left: dict[tuple, dict[str, Any]] = {}
    for row in totals:
        left[(row["bucket"], *(row[f] for f in fields))] = row
    for row in tagged:
        rest = left.get((row["bucket"], *(row[f] for f in fields)))
        if rest is not None:
            for name in _MEASURE_NAMES:
                rest[name] = (rest[name] or 0) - (row[name] or 0)
    return [row for row in left.values() if row["num_model_requests"]]


_MONEY_PLACES = Decimal(10) ** -MONEY["decimal_places"]
# The report's names of usage_aggregate_queryset's group columns.
_REPORT_NAMES = {"g_project": "project_id", "end_user": "user_id"}


@lru_cache(maxsize=64)
def _row_maker(names: tuple[str, ...], skip: int) -> Callable[[tuple], dict[str, Any]]:
    """A function making one result row (a tuple of the columns ``names``) into the
    report's dict, column ``skip`` left out: a dict display of the row's items, made once
    per column layout (as namedtuple makes its class), builds a row in a third of the time
    of ``dict(zip(names, row))``, and a month by project and end user is ~100,000 rows.
    The names are the queryset's own column aliases (identifiers), quoted with repr."""
    items = ", ".join(f"{name!r}: row[{i}]" for i, name in enumerate(names) if i != skip)
    return eval(f"lambda row: {{{items}}}", {})  # noqa: S307 (our own aliases only)


def _report_buckets(queryset: QuerySet, *, by_user: bool) -> dict[datetime, list[dict[str, Any]]]:
    """usage_aggregate without tag groups: the rows fetched at once and made into the
    report's dicts in one pass (_row_maker). Django's iterator (fetches of 100, a dict per
    row, renamed after) cost more than the query. The values need no conversion (_Loaded
    sums, plain columns; money is never NULL) but SQLite's sums of money (floats)."""
    connection = connections[queryset.db]
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = tuple(_REPORT_NAMES.get(column[0], column[0]) for column in cursor.description)
        rows = cursor.fetchall()
    at = names.index("bucket")
    make = _row_maker(names, at)
    money = connection.vendor != "postgresql"
    result: dict[datetime, list[dict[str, Any]]] = {}
    for epoch, group in groupby(rows, key=itemgetter(at)):  # in bucket order
        bucket = result[datetime.fromtimestamp(epoch, UTC)] = [make(values) for values in group]
        if by_user:
            for row in bucket:
                if not row["user_id"]:
                    row["user_id"] = None  # "" in the rollups: no end user given
        if money:
            for row in bucket:
                row["price"] = Decimal(str(row["price"])).quantize(_MONEY_PLACES)
    return result


def usage_aggregate(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    width: str,
    group_by: Sequence[str] = (),
    **filters: Any,
) -> dict[datetime, list[dict[str, Any]]]:
    """usage_aggregate_queryset's rows by bucket start, each with its group's
    ``project_id``, ``user_id`` (None: no end user) and ``tags`` ({key: value or None})."""
    queryset = usage_aggregate_queryset(
        tenant=tenant, start=start, end=end, width=width, group_by=group_by, **filters
    )
    tag_keys = [g.removeprefix(TAG_GROUP) for g in group_by if g.startswith(TAG_GROUP)]
    plain = [g for g in group_by if not g.startswith(TAG_GROUP)]
    if not tag_keys:
        return _report_buckets(queryset, by_user="user_id" in plain)
    rows = list(queryset)
    source = usage_source(width=width, group_by=group_by, **filters)
    if source == "tag" and tag_keys and not (filters.get("tags") or {}):
        untagged = _untagged_rows(
            tenant=tenant, start=start, end=end, plain=plain, tagged=rows, **filters
        )
        for row in untagged:
            row[_tag_group_name(0)] = None
        fields = [GROUP_FIELDS[g] for g in plain]
        rows = sorted(
            rows + untagged,
            key=lambda r: (
                r["bucket"],
                *((r[f] is None, r[f]) for f in fields),
                (r[_tag_group_name(0)] is None, r[_tag_group_name(0)] or ""),
            ),
        )
    result: dict[datetime, list[dict[str, Any]]] = {}
    by_project, by_user = "project_id" in plain, "user_id" in plain
    epoch_now, bucket = None, []
    for row in rows:  # in bucket order
        epoch = row.pop("bucket")
        if epoch != epoch_now:
            epoch_now = epoch
            bucket = result.setdefault(datetime.fromtimestamp(epoch, UTC), [])
        if row["price"] is None:
            row["price"] = _ZERO
        if by_project:
            row["project_id"] = row.pop("g_project")
        if by_user:
            row["user_id"] = row.pop("end_user") or None
        if tag_keys:
            row["tags"] = {key: row.pop(_tag_group_name(n)) for n, key in enumerate(tag_keys)}
        bucket.append(row)
    return result


def usage_records_iter(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    chunk_size: int = 5000,
    project_ids: Sequence[int] = (),
) -> Iterator[tuple]:
    """Raw ledger rows of the tenant in [start, end), oldest first, from a server-side
    cursor; ``project_ids``: only those projects' rows."""
    rows = UsageRecord.objects.for_tenant(tenant).filter(created_at__gte=start, created_at__lt=end)
    if project_ids:
        rows = rows.annotate(g_project=ledger_project()).filter(g_project__in=project_ids)
    return (
        rows.order_by("created_at", "id")
        .values_list(*RECORD_COLUMNS)
        .iterator(chunk_size=chunk_size)
    )


def rollups_iter(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    granularity: str,
    chunk_size: int = 5000,
    project_ids: Sequence[int] = (),
) -> Iterator[tuple]:
    """The tenant's rollup rows in [start, end); ``project_ids``: only those projects'."""
    rows = UsageRollup.objects.for_tenant(tenant).filter(
        granularity=granularity, bucket_start__gte=start, bucket_start__lt=end
    )
    if project_ids:
        rows = rows.filter(project_id__in=project_ids)
    return (
        rows.order_by("bucket_start", "project_id", "api_key_id", "model")
        .values_list(*ROLLUP_COLUMNS)
        .iterator(chunk_size=chunk_size)
    )


def ledger_totals(*, tenant: Tenant, start: datetime, end: datetime) -> dict[str, Any]:
    """The ledger's own totals for a tenant and range (what every report must equal)."""
    totals = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(created_at__gte=start, created_at__lt=end)
        .aggregate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status__gte=400)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cached_tokens=Sum("cached_tokens"),
            price=Sum("price"),
        )
    )
    return {k: (v or 0) if k != "price" else Decimal(v or 0) for k, v in totals.items()}


def statement_list(*, tenant: Tenant):
    return Statement.objects.for_tenant(tenant).order_by("-period_start")


def statement_get(*, tenant: Tenant, statement_id: int) -> Statement | None:
    return (
        Statement.objects.for_tenant(tenant)
        .prefetch_related("lines")
        .filter(id=statement_id)
        .first()
    )


def rate_card_list(*, tenant: Tenant) -> QuerySet[RateCard]:
    """The tenant's rate card versions, oldest first, with their overrides (staff reads:
    a tenant never sees its rate card, only what it pays)."""
    return (
        RateCard.objects.for_tenant(tenant)
        .select_related("tenant")
        .prefetch_related("prices__model")
        .order_by("effective_from")
    )


def rate_card_get(*, tenant: Tenant, rate_card_id: int) -> RateCard | None:
    return rate_card_list(tenant=tenant).filter(id=rate_card_id).first()
