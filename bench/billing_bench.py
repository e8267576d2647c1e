"""Billing at scale: a tenant's monthly report and a daily rollup on generated data.

    createdb tollgate_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tollgate_bench python manage.py migrate
    DATABASE_URL=… python bench/billing_bench.py --generate 30000000 --month 2026-10
    DATABASE_URL=… python bench/billing_bench.py --month 2026-10 --skip-build

``--generate N`` writes N ledger rows over the month in SQL (one INSERT … SELECT over
generate_series, secondary indexes dropped and rebuilt, then VACUUM ANALYZE): 10 tenants
of 3 projects and 6 keys each, 3 models, 70% of rows with one of 2,000 end users per
tenant, 60% with tags (team: 8 values, env: 2). (``manage.py generate_usage`` is the older
COPY generator, without attribution.) Attribution reports (end users, tags) read their
day rollups, or the ledger where none answers: each timing names its source and the
indexes its plan reads (EXPLAIN). Timings give wall time and the CPU time of this process
and of the PostgreSQL backend.

Prints one JSON document of timings (median of --repeat runs, milliseconds).
"""

import argparse
import os
import re
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
from apps.billing.management.commands.generate_usage import (  # noqa: E402
    Command as GenerateUsage,
)
from apps.billing.models import (  # noqa: E402
    BillingCursor,
    EndUserDayTotal,
    EndUserRollup,
    TagRollup,
    UsageRollup,
)
from apps.billing.services import (  # noqa: E402
    _rollup_day_rebuild,
    _rollup_hour_rebuild,
    ledger_high_water_capture,
    rollup_sync,
    rollup_window_recompute,
    statement_ensure,
    statement_refresh,
)
from apps.catalog.models import Price  # noqa: E402
from apps.keys.models import ApiKey  # noqa: E402
from apps.keys.services import api_key_issue  # noqa: E402
from apps.ledger.models import UsageRecord  # noqa: E402
from apps.ledger.partitions import partitions_cover  # noqa: E402
from apps.projects.models import Project  # noqa: E402
from apps.tenants.models import Tenant  # noqa: E402
from apps.tenants.services import admin_token_issue  # noqa: E402


def _backend_cpu_s() -> float:
    """CPU seconds PostgreSQL's backend of this connection has used (same host: /proc)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn, repeat: int) -> dict[str, float]:
    """Median and max wall time, and the median CPU time of this process and of the
    database backend (the machine is shared: CPU is what a run costs)."""
    runs, cpu, db_cpu = [], [], []
    for _ in range(repeat):
        db_before = _backend_cpu_s()
        started, cpu_started = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        db_cpu.append((_backend_cpu_s() - db_before) * 1000)
    return {
        "median_ms": round(statistics.median(runs), 1),
        "min_ms": round(min(runs), 1),
        "max_ms": round(max(runs), 1),
        "cpu_median_ms": round(statistics.median(cpu), 1),
        "db_cpu_median_ms": round(statistics.median(db_cpu), 1),
    }


GENERATE_SQL = """
INSERT INTO ledger_usagerecord (
    request_id, tenant_id, api_key_id, project_id, model, deployment, protocol, endpoint,
    stream, status, outcome, prompt_tokens, completion_tokens, cached_tokens, tokens_estimated,
    cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, service_tier, byok,
    prepaid, latency_ms, created_at, ingested_at, cost, price, cost_rule_id, end_user, tags)
SELECT 'gen-' || lpad(g::text, 10, '0'), k.tenant_id, k.id, k.project_id, m.name,
    m.name || '-backend/' || m.name, 'openai', 'chat.completions', false,
    CASE WHEN g % 50 = 0 THEN 502 ELSE 200 END,
    CASE WHEN g % 50 = 0 THEN 'upstream_error' ELSE 'ok' END,
    t.prompt, t.completion, t.cached, false, 0, 0, 0, '', false, false, 50 + g % 3000,
    '{start}'::timestamptz + (g - 1) * {step} * interval '1 microsecond',
    '{start}'::timestamptz + (g - 1) * {step} * interval '1 microsecond' + interval '2 s',
    p.cost, p.cost, m.price_id,
    CASE WHEN g % 10 < 7 THEN 'user-' || (g / 7 % 2000) ELSE '' END,
    CASE WHEN g % 5 < 3 THEN jsonb_build_object('team', 'team-' || (g / 3 % 8),
        'env', CASE WHEN g % 4 = 0 THEN 'dev' ELSE 'prod' END) END
FROM generate_series(1::bigint, {rows}) AS g
JOIN bench_keys AS k ON k.n = g % {keys}
JOIN bench_models AS m ON m.n = (g / 11) % 3
CROSS JOIN LATERAL (SELECT 10 + (g * 7919) % 8000 AS prompt,
    1 + (g * 104729) % 2000 AS completion,
    CASE WHEN g % 4 = 0 THEN ((g * 7919) % 8000) / 2 ELSE 0 END AS cached) AS t
CROSS JOIN LATERAL (SELECT ((t.prompt - t.cached) * m.input + t.cached * m.cached
    + t.completion * m.output) / 1000000 AS cost) AS p
"""


def generate(rows: int, start: datetime, end: datetime) -> dict:
    """N ledger rows spread evenly over [start, end), in SQL (no per-row Python)."""
    partitions_cover(start=start, end=end)  # each month's rows straight into its partition
    command = GenerateUsage()
    rates = command._catalog(start)
    keys = []
    for t in range(10):
        tenant, _ = Tenant.objects.get_or_create(name=f"bench-{t}")
        projects = [
            Project.objects.get_or_create(tenant=tenant, name=name)[0]
            for name in ("default", "web", "batch")
        ]
        for k in range(6):
            key = ApiKey.objects.filter(tenant=tenant, name=f"k{k}").first()
            if key is None:
                key, _secret = api_key_issue(tenant=tenant, name=f"k{k}", allowed_models=["*"])
            ApiKey.objects.filter(id=key.id).update(project=projects[k % 3])
            keys.append((tenant.id, key.id, projects[k % 3].id))
    began = time.perf_counter()
    table = UsageRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET session_replication_role = replica")  # no per-row FK triggers
        cursor.execute("SET maintenance_work_mem = '1GB'")
        deferred = command._drop_secondary_indexes(cursor)
        try:
            cursor.execute(
                "CREATE TEMP TABLE bench_keys (n int, tenant_id bigint, id bigint, project_id bigint)"
            )
            cursor.executemany(
                "INSERT INTO bench_keys VALUES (%s, %s, %s, %s)",
                [(n, *key) for n, key in enumerate(keys)],
            )
            cursor.execute(
                "CREATE TEMP TABLE bench_models (n int, name text, price_id bigint,"
                " input numeric, cached numeric, output numeric)"
            )
            for n, (name, rate) in enumerate(rates.items()):
                price = Price.objects.get(id=rate.id)
                cursor.execute(
                    "INSERT INTO bench_models VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        n,
                        name,
                        price.id,
                        price.input_per_mtok,
                        price.cached_input_per_mtok,
                        price.output_per_mtok,
                    ],
                )
            step = int((end - start).total_seconds() * 1_000_000 // rows)
            # Only our own integers and an ISO date go into the text (no parameters: the SQL
            # has literal % operators).
            cursor.execute(
                GENERATE_SQL.format(start=start.isoformat(), step=step, rows=rows, keys=len(keys))
            )
            inserted = time.perf_counter() - began
        finally:  # a failed load still gets its indexes back
            for definition in deferred:
                cursor.execute(definition)
        cursor.execute("SET session_replication_role = DEFAULT")
    indexed = time.perf_counter() - began
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {table}")
    return {
        "rows": rows,
        "insert_s": round(inserted, 1),
        "with_indexes_s": round(indexed, 1),
        "with_vacuum_s": round(time.perf_counter() - began, 1),
    }


ATTRIBUTION_REPORTS = {
    # name: (group_by, filters)
    "by_project_from_rollups": (["project_id"], {}),
    "by_project_key_model_from_rollups": (["project_id", "api_key_id", "model"], {}),
    "one_end_user": ([], {"user_ids": ["user-42"]}),
    "one_end_user_by_model": (["model"], {"user_ids": ["user-42"]}),
    "by_end_user": (["user_id"], {}),
    "by_project_and_end_user": (["project_id", "user_id"], {}),
    "one_tag_value": ([], {"tags": {"team": ["team-1"]}}),
    "one_tag_value_by_model": (["model"], {"tags": {"team": ["team-1"]}}),
    "by_tag": (["tag:team"], {}),
    "by_tag_and_project": (["tag:team", "project_id"], {}),
    # Answered by no rollup (the ledger): an end user and a tag together.
    "one_end_user_one_tag_value": ([], {"user_ids": ["user-42"], "tags": {"team": ["team-1"]}}),
}


def attribution_reports(tenant: Tenant, start: datetime, end: datetime, repeat: int) -> dict:
    """A month of 1d buckets for one tenant, per report: the selector's time and the
    indexes its plan reads (EXPLAIN ANALYZE)."""
    out = {}
    for name, (group_by, filters) in ATTRIBUTION_REPORTS.items():

        def run(group_by=group_by, filters=filters) -> None:
            selectors.usage_aggregate(
                tenant=tenant, start=start, end=end, width="1d", group_by=group_by, **filters
            )

        queryset = selectors.usage_aggregate_queryset(
            tenant=tenant, start=start, end=end, width="1d", group_by=group_by, **filters
        )
        plan = queryset.explain(analyze=True, buffers=True)
        out[name] = {
            "source": selectors.usage_source(width="1d", group_by=group_by, **filters),
            **timed(run, repeat),
            "scans": sorted(
                {
                    f"{kind.strip()} {index}"
                    for kind, index in re.findall(r"([A-Za-z ]*Scan) (?:using|on) (\w+)", plan)
                }
            ),
            "plan_ms": float(re.search(r"Execution Time: ([0-9.]+)", plan).group(1)),
        }
    return out


COPY_HOUR_SQL = """
INSERT INTO ledger_usagerecord (
    request_id, tenant_id, api_key_id, project_id, model, deployment, protocol, endpoint,
    stream, status, outcome, prompt_tokens, completion_tokens, cached_tokens, tokens_estimated,
    cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, service_tier, byok,
    prepaid, latency_ms, created_at, ingested_at, cost, price, cost_rule_id, end_user, tags)
SELECT request_id || %s, tenant_id, api_key_id, project_id, model, deployment, protocol,
    endpoint, stream, status, outcome, prompt_tokens, completion_tokens, cached_tokens,
    tokens_estimated, cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens,
    service_tier, byok, prepaid, latency_ms, created_at + %s * interval '1 microsecond', now(),
    cost, price, cost_rule_id, end_user, tags
FROM ledger_usagerecord WHERE created_at >= %s AND created_at < %s
    AND request_id NOT LIKE '%%-again-%%'
"""


def rollup_run_after_new_records(hour: datetime, repeat: int) -> dict:
    """Each run: an hour's worth of new records (copied from ``hour``: that hour's generated
    rows again, a microsecond later) reach the ledger, then the rollup job runs; its time."""
    runs = []
    added = 0
    run = time.time_ns()  # a rerun of the benchmark on the same data copies under new ids
    for n in range(repeat):
        with connection.cursor() as cursor:
            suffix = f"-again-{run}-{n}"
            cursor.execute(COPY_HOUR_SQL, [suffix, n + 1, hour, hour + timedelta(hours=1)])
            added = cursor.rowcount
        runs.append(timed(rollup_sync, 1))
    return {
        "records_per_run": added,
        "median_ms": round(statistics.median(r["median_ms"] for r in runs), 1),
        "max_ms": round(max(r["median_ms"] for r in runs), 1),
        "cpu_median_ms": round(statistics.median(r["cpu_median_ms"] for r in runs), 1),
        "db_cpu_median_ms": round(statistics.median(r["db_cpu_median_ms"] for r in runs), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--month", default="2026-10", help="YYYY-MM of the generated data")
    parser.add_argument("--tenant", default="bench-0")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-build", action="store_true", help="rollups already built")
    parser.add_argument(
        "--rebuild-days", action="store_true", help="also rebuild every day of the month"
    )
    parser.add_argument("--generate", type=int, help="first write this many ledger rows (SQL)")
    args = parser.parse_args()
    start = datetime.fromisoformat(args.month + "-01").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    if args.generate:
        print(orjson.dumps({"generated": generate(args.generate, start, end)}).decode())
    tenant = Tenant.objects.get(name=args.tenant)
    out: dict = {
        "ledger_rows": UsageRecord.objects.count(),
        "tenant_rows_in_month": UsageRecord.objects.for_tenant(tenant)
        .filter(created_at__gte=start, created_at__lt=end)
        .count(),
    }
    with connection.cursor() as cursor:
        # The table and, on PostgreSQL's partitioned ledger, its monthly partitions.
        tree = (
            "(SELECT relid FROM pg_partition_tree('ledger_usagerecord')"
            " UNION SELECT 'ledger_usagerecord'::regclass) t"
        )
        cursor.execute(f"SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM {tree}")
        out["ledger_size"] = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT (SELECT pg_size_pretty(sum(pg_relation_size(relid))) FROM {tree}),"
            " (SELECT avg(pg_column_size(u.*))::int FROM"
            " (SELECT * FROM ledger_usagerecord LIMIT 10000) u)"
        )
        out["ledger_heap_size"], out["avg_row_bytes"] = cursor.fetchone()

    # The first rollup run: every hour, and the end-user and tag rollups from the whole
    # ledger (a new ledger, or the first run since they exist).
    if not args.skip_build:
        began = time.perf_counter()
        rollup_sync()
        out["first_rollup_run_s"] = round(time.perf_counter() - began, 1)
    # Full rebuild of a day from the ledger (backfill / repair): 24 hours + the day row,
    # and the day's end-user and tag rollups.
    sample = start + timedelta(days=14)
    days = []
    day = start
    while day < end:
        if day == sample or (args.rebuild_days and not args.skip_build):
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
    high_water = BillingCursor.objects.get(name="rollups").high_water

    def hour_rebuild() -> None:
        with transaction.atomic():
            _rollup_hour_rebuild(middle, high_water)

    # One hour from the ledger (what a run does for each hour its new records touch).
    out["hourly_rollup_rebuild"] = timed(hour_rebuild, args.repeat)
    out["rollup_rows"] = UsageRollup.objects.count()
    out["end_user_rollup_rows"] = EndUserRollup.objects.count()
    out["end_user_day_total_rows"] = EndUserDayTotal.objects.count()
    out["tag_rollup_rows"] = TagRollup.objects.count()
    out["tenant_month_end_user_rollup_rows"] = (
        EndUserRollup.objects.for_tenant(tenant)
        .filter(bucket_start__gte=start, bucket_start__lt=end)
        .count()
    )

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
    out["monthly_attribution_reports"] = attribution_reports(tenant, start, end, args.repeat)
    out["monthly_report_api_usage"] = timed(report_api_usage, args.repeat)
    out["monthly_report_api_costs"] = timed(report_api_costs, args.repeat)
    out["hourly_report_api_1h_week"] = timed(
        lambda: client.get(
            "/api/v1/organization/usage/completions",
            {**params, "bucket_width": "1h", "limit": 168},
        ),
        args.repeat,
    )

    # The month's open statement refresh: from the rollups (the job's way: rollups
    # brought up to date, then read), and from the ledger's rows (closing's way).
    statement = statement_ensure(tenant=tenant, month=start.date())
    out["statement_refresh_from_rollups"] = timed(
        lambda: statement_refresh(statement=statement), args.repeat
    )
    high_water = ledger_high_water_capture()
    out["statement_refresh_from_ledger"] = timed(
        lambda: statement_refresh(statement=statement, high_water=high_water),
        max(1, args.repeat // 2),
    )

    # A rollup run after an hour of this load's records arrived (copies of one hour's rows,
    # all tenants: a run every minute sees a sixtieth of it).
    out["rollup_run_after_an_hour_of_records"] = rollup_run_after_new_records(
        start + timedelta(days=20, hours=9), args.repeat
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
