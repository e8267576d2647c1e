"""Management API reports (/api/v1/…), scoped to the caller's tenant.

Every view derives from TenantReportView: the tenant comes from the admin token (or, for
staff, from ?tenant=) and every read goes through apps.billing.selectors, which only
reads ``for_tenant(tenant)`` querysets. Another tenant's objects are a 404.
"""

import base64
import binascii
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, StreamingHttpResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.billing import schema, selectors
from apps.billing.models import UsageRollup
from apps.billing.renderers import ExactJSONRenderer, decimal_text
from apps.core.csv_export import csv_chunks, spreadsheet_safe
from apps.gateway.protocol.attribution import (
    MAX_TAGS,
    AttributionInvalid,
    end_user_checked,
    tag_checked,
)
from apps.tenants.access import TenantAccess, require_every_project, tenant_access_for

USAGE_LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}
COST_LIMITS = (7, 180)
MAX_FILTER_VALUES = 100


class TenantReportView(APIView):
    """Resolves ``self.access`` (and ``self.tenant``) once per request, before any handler
    runs. A member narrowed to some projects reads only those projects' usage
    (``self.project_ids``, from ``TenantAccess.report_project_ids``), never the
    tenant-wide statements (403)."""

    renderer_classes = [ExactJSONRenderer]
    tenant = None
    access: TenantAccess
    tenant_wide = False  # statements: the tenant's bill as a whole

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self.access = tenant_access_for(request)
        self.tenant = self.access.tenant
        if self.tenant_wide:
            require_every_project(self.access)

    @property
    def project_ids(self) -> list[int]:
        """The projects this caller's reports cover ([]: every project)."""
        return self.access.report_project_ids()


# Query parameters ------------------------------------------------------------------------


def _list_param(request: Request, name: str) -> list[str]:
    values = request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _int_param(request: Request, name: str, *, required: bool = False) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        if required:
            raise exceptions.ValidationError({name: "is required (Unix seconds)"})
        return None
    try:
        return int(raw)
    except ValueError:
        raise exceptions.ValidationError({name: "must be an integer"}) from None


def _time_range(request: Request, width: timedelta) -> tuple[datetime, datetime]:
    """[start, end) rounded out to whole buckets (UTC); end defaults to now."""
    start_ts = _int_param(request, "start_time", required=True)
    end_ts = _int_param(request, "end_time")
    end_ts = math.ceil(time.time()) if end_ts is None else end_ts
    if start_ts < 0 or end_ts <= start_ts:
        raise exceptions.ValidationError({"end_time": "must be after start_time"})
    step = int(width.total_seconds())
    start = start_ts - start_ts % step
    end = end_ts if end_ts % step == 0 else end_ts + step - end_ts % step
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)


def _page_start(request: Request, start: datetime, end: datetime) -> datetime:
    page = request.query_params.get("page")
    if not page:
        return start
    try:
        ts = int(base64.urlsafe_b64decode(page.removeprefix("page_").encode()).decode())
        cursor = datetime.fromtimestamp(ts, UTC)
    except (ValueError, binascii.Error, OverflowError, OSError):
        raise exceptions.ValidationError({"page": "invalid cursor"}) from None
    if not start <= cursor < end:
        raise exceptions.ValidationError({"page": "cursor outside the requested range"})
    return cursor


def _page_token(when: datetime) -> str:
    return "page_" + base64.urlsafe_b64encode(str(int(when.timestamp())).encode()).decode()


def _limit(request: Request, default: int, maximum: int) -> int:
    limit = _int_param(request, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise exceptions.ValidationError({"limit": f"must be between 1 and {maximum}"})
    return limit


def _api_key_ids(request: Request, access: TenantAccess) -> list[int]:
    """Ids of keys the caller sees; another tenant's, another project's (for a member
    narrowed to some projects) or none such is a 404."""
    raw = _list_param(request, "api_key_ids")
    try:
        ids = [int(value) for value in raw]
    except ValueError:
        raise exceptions.ValidationError({"api_key_ids": "must be key ids"}) from None
    if not ids:
        return ids
    found = selectors.api_key_ids_for_tenant(
        tenant=access.tenant, ids=ids, project_ids=access.report_project_ids()
    )
    if found != set(ids):
        raise Http404("No such API key.")
    return ids


def _project_ids(request: Request, access: TenantAccess) -> list[int]:
    """The projects the report covers: those asked for, each of the caller's tenant and
    visible to them (else a 404), or, asked for none, every project the caller sees
    ([] for a caller who sees them all)."""
    raw = _list_param(request, "project_ids")
    try:
        ids = [int(value) for value in raw]
    except ValueError:
        raise exceptions.ValidationError({"project_ids": "must be project ids"}) from None
    if ids and selectors.project_ids_for_tenant(tenant=access.tenant, ids=ids) != set(ids):
        raise Http404("No such project.")
    return access.report_project_ids(ids)


def _user_ids(request: Request) -> list[str]:
    """End-user ids, each value whole (an id may hold a comma): ``user_ids[]=a&user_ids[]=b``."""
    values = request.query_params.getlist("user_ids") + request.query_params.getlist("user_ids[]")
    if len(values) > MAX_FILTER_VALUES:
        raise exceptions.ValidationError({"user_ids": f"at most {MAX_FILTER_VALUES} ids"})
    try:
        return [end_user_checked(value, "user_ids") for value in values]
    except AttributionInvalid as exc:
        raise exceptions.ValidationError({"user_ids": exc.message}) from None


def _tags(request: Request) -> dict[str, list[str]]:
    """``tags=key:value`` (repeated or comma-separated): a row matches when it carries one
    of the values given for every key named."""
    wanted: dict[str, list[str]] = {}
    values = _list_param(request, "tags")
    if len(values) > MAX_FILTER_VALUES:
        raise exceptions.ValidationError({"tags": f"at most {MAX_FILTER_VALUES} tags"})
    for item in values:
        key, sep, value = item.partition(":")
        try:
            if not sep:
                raise AttributionInvalid("tags", "each tag is key:value")
            key, value = tag_checked(key, value, "tags")
        except AttributionInvalid as exc:
            raise exceptions.ValidationError({"tags": exc.message}) from None
        if value not in wanted.setdefault(key, []):
            wanted[key].append(value)
    return wanted


def _group_by(request: Request, allowed: set[str], ignored: set[str]) -> list[str]:
    """The groups asked for, in order; ``tag:<key>`` groups by a tag's value."""
    groups = []
    for value in _list_param(request, "group_by"):
        if value in ignored:
            continue
        if value.startswith(selectors.TAG_GROUP):
            try:
                tag_checked(value.removeprefix(selectors.TAG_GROUP), "v", "group_by")
            except AttributionInvalid as exc:
                raise exceptions.ValidationError({"group_by": exc.message}) from None
        elif value not in allowed:
            raise exceptions.ValidationError(
                {
                    "group_by": f"'{value[:80]}' is not supported"
                    f" (use {sorted(allowed | ignored)} or tag:<key>)"
                }
            )
        if value not in groups:
            groups.append(value)
    if sum(g.startswith(selectors.TAG_GROUP) for g in groups) > MAX_TAGS:
        raise exceptions.ValidationError({"group_by": f"at most {MAX_TAGS} tag groups"})
    return groups


def _filters(request: Request, access: TenantAccess) -> dict[str, Any]:
    """The filters both reports take (OpenAI's names, plus ``tags``), narrowed to the
    projects the caller sees."""
    return {
        "api_key_ids": _api_key_ids(request, access),
        "project_ids": _project_ids(request, access),
        "user_ids": _user_ids(request),
        "tags": _tags(request),
    }


def _attribution(row: dict[str, Any], groups: list[str]) -> dict[str, Any]:
    """project_id, user_id and tags of a result: null unless grouped by them (OpenAI's
    convention; ``tags`` is Tollgate's, filled by ``group_by=tag:<key>``)."""
    project = row.get("project_id")
    return {
        "project_id": None if "project_id" not in groups or project is None else str(project),
        "user_id": row.get("user_id") if "user_id" in groups else None,
        "tags": row.get("tags"),
    }


def _page(
    request: Request, width_name: str, default: int, maximum: int
) -> tuple[datetime, datetime, datetime, timedelta]:
    """(first bucket, page end, range end, bucket width)."""
    width = selectors.BUCKET_WIDTHS[width_name]
    start, end = _time_range(request, width)
    first = _page_start(request, start, end)
    page_end = min(end, first + width * _limit(request, default, maximum))
    return first, page_end, end, width


def _buckets(
    first: datetime,
    page_end: datetime,
    end: datetime,
    width: timedelta,
    results: dict[datetime, list[dict[str, Any]]],
    render,
) -> dict[str, Any]:
    data, bucket = [], first
    while bucket < page_end:
        data.append(
            {
                "object": "bucket",
                "start_time": int(bucket.timestamp()),
                "end_time": int((bucket + width).timestamp()),
                "results": [render(row) for row in results.get(bucket, [])],
            }
        )
        bucket += width
    has_more = page_end < end
    return {
        "object": "page",
        "data": data,
        "has_more": has_more,
        "next_page": _page_token(page_end) if has_more else None,
    }


# OpenAI-shaped usage and costs -----------------------------------------------------------


@schema.usage_schema
class UsageCompletionsView(TenantReportView):
    """GET /api/v1/organization/usage/completions — OpenAI's organization usage shape."""

    def get(self, request: Request) -> Response:
        width = request.query_params.get("bucket_width") or "1d"
        if width not in USAGE_LIMITS:
            raise exceptions.ValidationError({"bucket_width": "must be 1m, 1h or 1d"})
        first, page_end, end, step = _page(request, width, *USAGE_LIMITS[width])
        groups = _group_by(
            request,
            {"model", "api_key_id", "project_id", "user_id"},
            {"batch", "service_tier", "api_source"},
        )
        results = selectors.usage_aggregate(
            tenant=self.tenant,
            start=first,
            end=page_end,
            width=width,
            group_by=groups,
            models=_list_param(request, "models"),
            **_filters(request, self.access),
        )

        def render(row: dict[str, Any]) -> dict[str, Any]:
            key_id = row.get("api_key_id")
            return {
                "object": "organization.usage.completions.result",
                "input_tokens": row["input_tokens"] or 0,
                "output_tokens": row["output_tokens"] or 0,
                "input_cached_tokens": row["input_cached_tokens"] or 0,
                "input_audio_tokens": 0,
                "output_audio_tokens": 0,
                "num_model_requests": row["num_model_requests"] or 0,
                "api_key_id": None if key_id is None else str(key_id),
                "model": row.get("model"),
                "batch": None,
                **_attribution(row, groups),
            }

        return Response(_buckets(first, page_end, end, step, results, render))


@schema.costs_schema
class CostsView(TenantReportView):
    """GET /api/v1/organization/costs — OpenAI's organization costs shape.

    ``line_item`` is the model (one line per model, like the statements); bucket_width is
    1d (OpenAI's only width) or 1h.
    """

    def get(self, request: Request) -> Response:
        width = request.query_params.get("bucket_width") or "1d"
        if width not in ("1d", "1h"):
            raise exceptions.ValidationError({"bucket_width": "must be 1d (or 1h)"})
        first, page_end, end, step = _page(request, width, *COST_LIMITS)
        groups = _group_by(
            request, {"line_item", "api_key_id", "project_id", "user_id"}, {"api_source"}
        )
        line_items = _list_param(request, "line_items")
        results = selectors.usage_aggregate(
            tenant=self.tenant,
            start=first,
            end=page_end,
            width=width,
            group_by=["model" if g == "line_item" else g for g in groups],
            models=line_items,
            **_filters(request, self.access),
        )

        def render(row: dict[str, Any]) -> dict[str, Any]:
            key_id = row.get("api_key_id")
            result = {
                "object": "organization.costs.result",
                "amount": {"value": row["price"], "currency": "usd"},
                "line_item": row.get("model"),
                **_attribution(row, groups),
            }
            if "api_key_id" in groups:
                result["api_key_id"] = str(key_id)
            return result

        return Response(_buckets(first, page_end, end, step, results, render))


# CSV exports -----------------------------------------------------------------------------


def _csv_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if value is None:
        return ""
    if isinstance(value, dict):  # tags: key:value;key:value (a text cell, neutralised)
        return spreadsheet_safe(";".join(f"{k}:{v}" for k, v in sorted(value.items())))
    return value


async def _async_chunks(chunks: Iterator[str]) -> AsyncIterator[str]:
    """Under ASGI, pull each chunk in the request's sync thread (one server-side cursor,
    one DB connection) instead of letting Django buffer the whole response."""
    done = object()
    while True:
        chunk = await sync_to_async(next, thread_sensitive=True)(chunks, done)
        if chunk is done:
            return
        yield chunk


def _csv_response(request: Request, chunks: Iterator[str], filename: str) -> StreamingHttpResponse:
    content = _async_chunks(chunks) if isinstance(request._request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _csv_range(request: Request) -> tuple[datetime, datetime]:
    start_ts = _int_param(request, "start_time", required=True)
    end_ts = _int_param(request, "end_time")
    end_ts = math.ceil(time.time()) if end_ts is None else end_ts
    if start_ts < 0 or end_ts <= start_ts:
        raise exceptions.ValidationError({"end_time": "must be after start_time"})
    return datetime.fromtimestamp(start_ts, UTC), datetime.fromtimestamp(end_ts, UTC)


@schema.records_csv_schema
class UsageRecordsCSVView(TenantReportView):
    """GET /api/v1/usage/records.csv?start_time=&end_time= — raw ledger rows, streamed."""

    def get(self, request: Request) -> StreamingHttpResponse:
        start, end = _csv_range(request)
        rows = selectors.usage_records_iter(
            tenant=self.tenant, start=start, end=end, project_ids=self.project_ids
        )
        name = f"usage-{self.tenant.name}-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.csv"
        return _csv_response(
            request, csv_chunks(selectors.RECORD_HEADERS, rows, render=_csv_value), name
        )


@schema.rollups_csv_schema
class UsageRollupsCSVView(TenantReportView):
    """GET /api/v1/usage/rollups.csv?start_time=&end_time=&granularity=hour|day."""

    def get(self, request: Request) -> StreamingHttpResponse:
        start, end = _csv_range(request)
        granularity = request.query_params.get("granularity") or UsageRollup.Granularity.HOUR
        if granularity not in UsageRollup.Granularity.values:
            raise exceptions.ValidationError({"granularity": "must be hour or day"})
        rows = selectors.rollups_iter(
            tenant=self.tenant,
            start=start,
            end=end,
            granularity=granularity,
            project_ids=self.project_ids,
        )
        name = f"rollups-{granularity}-{self.tenant.name}-{start:%Y%m%d}-{end:%Y%m%d}.csv"
        return _csv_response(
            request, csv_chunks(selectors.ROLLUP_HEADERS, rows, render=_csv_value), name
        )


# Statements ------------------------------------------------------------------------------


def _statement_json(statement, *, lines: bool) -> dict[str, Any]:
    data = {
        "id": statement.id,
        "object": "statement",
        "tenant": statement.tenant.name,
        "period_start": statement.period_start.isoformat(),
        "period_end": statement.period_end.isoformat(),
        "status": statement.status,
        "currency": statement.currency,
        "total": statement.total,
        "amount_due": statement.amount_due,
        "closed_at": statement.closed_at.isoformat() if statement.closed_at else None,
        "refreshed_at": statement.refreshed_at.isoformat() if statement.refreshed_at else None,
        # A tenant with a balance: the journal over the month; null otherwise.
        "balance": None
        if statement.opening_balance is None
        else {
            "opening": statement.opening_balance,
            "credits": statement.balance_credits,
            "usage": statement.balance_usage,
            "closing": statement.closing_balance,
        },
    }
    if lines:
        data["lines"] = [
            {
                "kind": line.kind,
                "description": line.description,
                "model": line.model,
                "usage_period": line.usage_period.isoformat(),
                "requests": line.requests,
                "prompt_tokens": line.prompt_tokens,
                "completion_tokens": line.completion_tokens,
                "cached_tokens": line.cached_tokens,
                "amount": line.amount,
            }
            for line in statement.lines.all()
        ]
    return data


@schema.statement_list_schema
class StatementListView(TenantReportView):
    """GET /api/v1/statements — the tenant's monthly statements, newest first."""

    tenant_wide = True

    def get(self, request: Request) -> Response:
        statements = selectors.statement_list(tenant=self.tenant).select_related("tenant")
        return Response(
            {"object": "list", "data": [_statement_json(s, lines=False) for s in statements]}
        )


@schema.statement_detail_schema
class StatementDetailView(TenantReportView):
    """GET /api/v1/statements/<id> — one statement with its lines."""

    tenant_wide = True

    def get(self, request: Request, statement_id: int) -> Response:
        statement = selectors.statement_get(tenant=self.tenant, statement_id=statement_id)
        if statement is None:
            raise Http404("No such statement.")
        return Response(_statement_json(statement, lines=True))
