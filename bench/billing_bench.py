"""Billing at scale: a tenant's monthly report and a daily rollup on generated data.

    createdb tollgate_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tollgate_bench python manage.py migrate
    DATABASE_URL=… python manage.py generate_usage --days 30 --per-day 1000000 --tenants 10 \
        --end 2026-11-01
    DATABASE_URL=… python bench/billing_bench.py --month 2026-10

Prints one JSON document of timings (median of --repeat runs, milliseconds).
"""

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.platform.settings")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from apps.billing import selectors  # noqa: E402
from apps.billing.models import UsageRollup  # noqa: E402
from apps.billing.services import (  # noqa: E402
    _rollup_day_rebuild,
    rollup_buckets_recompute,
    rollup_window_recompute,
    statement_ensure,
    statement_refresh,
)
from apps.ledger.models import UsageRecord  # noqa: E402
from apps.tenants.models import Tenant  # noqa: E402
from apps.tenants.services import admin_token_issue  # noqa: E402


def timed(fn, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(runs), 1), "max_ms": round(max(runs), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--month", default="2026-10", help="YYYY-MM of the generated data")
    parser.add_argument("--tenant", default="bench-0")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-build", action="store_true", help="rollups already built")
    args = parser.parse_args()
    start = datetime.fromisoformat(args.month + "-01").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    tenant = Tenant.objects.get(name=args.tenant)
    out: dict = {
        "ledger_rows": UsageRecord.objects.count(),
        "tenant_rows_in_month": UsageRecord.objects.for_tenant(tenant)
        .filter(created_at__gte=start, created_at__lt=end)
        .count(),
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('ledger_usagerecord'))")
        out["ledger_size"] = cursor.fetchone()[0]
        cursor.execute(
            "SELECT pg_size_pretty(pg_relation_size('ledger_usagerecord')),"
            " (SELECT avg(pg_column_size(u.*))::int FROM"
            " (SELECT * FROM ledger_usagerecord LIMIT 10000) u)"
        )
        out["ledger_heap_size"], out["avg_row_bytes"] = cursor.fetchone()

    # Full rebuild of a day from the ledger (backfill / repair): 24 hours + the day row.
    sample = start + timedelta(days=14)
    days = []
    day = start
    while day < end:
        if not args.skip_build or day == sample:
            began = time.perf_counter()
            rollup_window_recompute(start=day, end=day + timedelta(days=1))
            days.append((time.perf_counter() - began) * 1000)
        day += timedelta(days=1)
    out["daily_rollup_rebuild_from_ledger"] = {
        "days": len(days),
        "median_ms": round(statistics.median(days), 1),
        "max_ms": round(max(days), 1),
        "records_per_day": UsageRecord.objects.filter(
            created_at__gte=sample, created_at__lt=sample + timedelta(days=1)
        ).count(),
    }

    # The steady-state daily rollup: the day row from its 24 hour rows (the hours are
    # rebuilt by the minute job as the day goes).
    def day_from_hours() -> None:
        with transaction.atomic():
            _rollup_day_rebuild(sample)

    out["daily_rollup_from_hours"] = timed(day_from_hours, args.repeat)
    middle = start + timedelta(days=14, hours=13)
    out["hourly_rollup_rebuild"] = timed(
        lambda: rollup_buckets_recompute(hours=[middle]), args.repeat
    )
    out["rollup_rows"] = UsageRollup.objects.count()

    # A tenant's monthly report: OpenAI-shaped usage and costs for the month, 1d buckets.
    def report_selector() -> None:
        selectors.usage_aggregate(
            tenant=tenant, start=start, end=end, width="1d", group_by=["model", "api_key_id"]
        )

    _token, secret = admin_token_issue(tenant=tenant, name=f"bench-{time.time_ns()}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    params = {"start_time": int(start.timestamp()), "end_time": int(end.timestamp()), "limit": 31}

    def report_api_usage() -> None:
        r = client.get(
            "/api/v1/organization/usage/completions",
            {**params, "group_by": ["model", "api_key_id"]},
        )
        assert r.status_code == 200, r.content

    def report_api_costs() -> None:
        r = client.get("/api/v1/organization/costs", {**params, "group_by": "line_item"})
        assert r.status_code == 200, r.content

    out["monthly_report_selector"] = timed(report_selector, args.repeat)
    out["monthly_report_api_usage"] = timed(report_api_usage, args.repeat)
    out["monthly_report_api_costs"] = timed(report_api_costs, args.repeat)
    out["hourly_report_api_1h_week"] = timed(
        lambda: client.get(
            "/api/v1/organization/usage/completions",
            {**params, "bucket_width": "1h", "limit": 168},
        ),
        args.repeat,
    )

    # The statement (from the ledger itself, not rollups): the month's open statement refresh.
    statement = statement_ensure(tenant=tenant, month=start.date())
    out["statement_refresh_from_ledger"] = timed(
        lambda: statement_refresh(statement=statement), max(1, args.repeat // 2)
    )

    # CSV export of a tenant's day of raw records, streamed.
    def csv_day() -> int:
        r = client.get(
            "/api/v1/usage/records.csv",
            {"start_time": int(sample.timestamp()), "end_time": int(sample.timestamp()) + 86400},
        )
        return sum(len(chunk) for chunk in r.streaming_content)

    began = time.perf_counter()
    size = csv_day()
    elapsed = time.perf_counter() - began
    rows = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(created_at__gte=sample, created_at__lt=sample + timedelta(days=1))
        .count()
    )
    out["csv_export_one_day"] = {
        "ms": round(elapsed * 1000, 1),
        "bytes": size,
        "rows": rows,
        "rows_per_s": int(rows / elapsed),
    }
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
