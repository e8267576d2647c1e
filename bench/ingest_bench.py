"""Benchmark of the usage ingest: N usage events in the Redis stream, drained into
PostgreSQL by one ingest process (this one) exactly as the Celery task drains them.

Prints events/s, the ingest process's CPU per event and the PostgreSQL backend's CPU per
event (the server is local: its backend process is read from /proc), and checks the
ledger holds each event once. Uses BENCH_DATABASE_URL (default database
tollgate_ingest_bench) and BENCH_REDIS_URL (default Redis db 13).

    .venv/bin/python bench/ingest_bench.py [--events 50000] [--batch 500] [--repeat 3]
"""

import argparse
import os
import resource
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_bench import cpu_seconds, ensure_database  # noqa: E402


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=None, help="LEDGER_BATCH_SIZE")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    database_url = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_ingest_bench"
    )
    ensure_database(database_url)
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        LEDGER_STREAM="tollgate:ingest-bench",
        DJANGO_SETTINGS_MODULE="apps.platform.settings",
    )
    if args.batch:
        os.environ["LEDGER_BATCH_SIZE"] = str(args.batch)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from apps.core.redis import sync_client
    from apps.keys.models import ApiKey
    from apps.ledger.events import UsageEvent
    from apps.ledger.models import UsageRecord
    from apps.ledger.services import usage_ingest_batch
    from apps.tenants.models import Tenant

    call_command("migrate", verbosity=0)
    tenant, _ = Tenant.objects.get_or_create(name="ingest-bench")
    keys = list(ApiKey.objects.filter(tenant=tenant)[:4])
    while len(keys) < 4:
        keys.append(
            ApiKey.objects.create(
                tenant=tenant, name=f"k{len(keys)}", key_hash=uuid.uuid4().hex, prefix="tg-b"
            )
        )
    client = sync_client()
    stream = settings.LEDGER_STREAM
    print(f"{args.events} events, batch {settings.LEDGER_BATCH_SIZE}")
    for run in range(args.repeat):
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {UsageRecord._meta.db_table}")
        client.delete(stream)
        now = time.time()
        pipe = client.pipeline(transaction=False)
        for i in range(args.events):
            key = keys[i % len(keys)]
            event = UsageEvent(
                request_id=uuid.uuid4().hex,
                tenant_id=tenant.id,
                api_key_id=key.id,
                model="bench-model",
                protocol="openai",
                endpoint="chat.completions",
                stream=i % 2 == 0,
                created_at=now - (args.events - i) / 1000,
                deployment="bench-mock/m",
                status=200,
                prompt_tokens=120 + i % 50,
                completion_tokens=40 + i % 30,
                cached_tokens=i % 3 * 16,
                prompt_tokens_bound=4096,
                completion_tokens_bound=1024,
                latency_ms=180,
                ttft_ms=35,
                cost=str(17_000_000 + i),
                price=str(25_500_000 + i),
                cost_rule_id=None,
            )
            pipe.xadd(stream, {"e": event.to_bytes()})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        cpu0, pg0, wall0 = own_cpu(), cpu_seconds(backend), time.perf_counter()
        total = 0
        while handled := usage_ingest_batch(consumer="bench"):
            total += handled
        wall = time.perf_counter() - wall0
        cpu, pg = own_cpu() - cpu0, cpu_seconds(backend) - pg0
        landed = UsageRecord.objects.filter(tenant=tenant).count()
        print(
            f"run {run + 1}: {total / wall:,.0f} events/s; "
            f"ingest CPU {cpu / total * 1000:.4f} ms/event; "
            f"PostgreSQL CPU {pg / total * 1000:.4f} ms/event; "
            f"ledger rows {landed} (expected {args.events})"
        )


if __name__ == "__main__":
    main()
