"""Faults: Postgres unreachable for the ingest (events wait in Redis, then land exactly
once) and a Celery worker killed in the middle of a rollup (the next run writes the same
rows; reconciliation finds no difference)."""

import contextlib
import os
import select
import signal
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from apps.platform.celery_app import app as celery_app
from django.conf import settings
from django.db import connection, transaction

from apps.billing.models import BillingCursor, UsageRollup
from apps.billing.services import (
    MEASURES,
    reconcile_run,
    rollup_sync,
    rollup_window_recompute,
)
from apps.core.redis import sync_client
from apps.ledger.models import UsageRecord
from tests.billing.billing_support import event, ingest, world_make
from tests.conftest import BIN, Process, start_celery_worker, start_gateway, wait_until

pytestmark = pytest.mark.e2e
OUTAGE_S = float(os.environ.get("TOLLGATE_FAULT_OUTAGE_S", "30"))


class TcpProxy:
    """127.0.0.1:<port> → Postgres; `down()` refuses and cuts every connection."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.running:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def down(self) -> None:
        self.running = False
        self.listener.close()  # new connections: refused
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns.clear()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()


def chat(gateway: str, secret: str) -> str:
    r = httpx.post(
        gateway + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def test_postgres_down_events_wait_in_redis_and_land_afterwards(
    transactional_db, server_env, upstream
):
    world = world_make(upstream.base_url)
    from apps.provisioning.services import config_apply
    from tests.billing.billing_support import world_document

    # A fresh inference key (the world's secrets are not returned twice).
    doc = world_document(upstream.base_url)
    doc["tenants"][0]["keys"].append({"name": "fault", "models": ["test-model"]})
    secret = config_apply(document=doc).keys_created[0]["secret"]
    stream = f"{settings.LEDGER_STREAM}:fault-{os.getpid()}"
    redis = sync_client()
    redis.delete(stream)
    db = settings.DATABASES["default"]
    proxy = TcpProxy(int(db["PORT"] or 5432))
    gateway = start_gateway(server_env, name="gateway-fault", LEDGER_STREAM=stream)
    worker_env = {
        **server_env,
        "LEDGER_STREAM": stream,
        "LEDGER_RECLAIM_IDLE_MS": "1000",
        "DATABASE_URL": f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}",
    }
    worker = start_celery_worker(worker_env, name="fault-worker")
    url = f"http://127.0.0.1:{gateway.port}"
    try:
        warm = [chat(url, secret) for _ in range(3)]
        wait_until(lambda: UsageRecord.objects.filter(request_id__in=warm).count() == 3, 60)

        proxy.down()
        down_at = time.monotonic()

        def failed() -> int:
            log = worker.log_path.read_text(errors="replace")
            return log.count("raised unexpected: OperationalError")

        failures_before = failed()
        during = [chat(url, secret) for _ in range(20)]  # the gateway keeps serving
        # The outage lasts OUTAGE_S (the scenario: "Postgres down for 30 s") and at least
        # three failed ingest runs of the worker.
        wait_until(
            lambda: failed() >= failures_before + 3 and time.monotonic() - down_at >= OUTAGE_S,
            timeout=OUTAGE_S + 120,
            interval=0.5,
        )
        assert not UsageRecord.objects.filter(request_id__in=during).exists()
        waiting = redis.xlen(stream)
        assert waiting >= 20  # nothing acknowledged or deleted while the DB is away

        proxy.up()
        wait_until(
            lambda: UsageRecord.objects.filter(request_id__in=during).count() == 20, timeout=120
        )
        wait_until(lambda: redis.xinfo_groups(stream)[0]["pending"] == 0, timeout=60)
        assert redis.xlen(stream) == 0
        assert UsageRecord.objects.filter(api_key__name="fault").count() == 23
        assert world.acme.id == UsageRecord.objects.get(request_id=during[0]).tenant_id
    finally:
        worker.stop()
        gateway.stop()
        proxy.down()
        redis.delete(stream)


def rows() -> list[tuple]:
    return list(
        UsageRollup.objects.order_by(
            "granularity", "bucket_start", "tenant_id", "api_key_id", "model"
        ).values_list("granularity", "bucket_start", "tenant_id", "api_key_id", "model", *MEASURES)
    )


def test_a_worker_killed_mid_rollup_changes_nothing_and_the_next_run_is_right(
    transactional_db, server_env, redis_url
):
    client = sync_client()
    client.delete(settings.LEDGER_STREAM)
    world = world_make()
    ingest(
        *[event(world.acme_key, f"2026-04-0{d} {h:02d}:30") for d in (1, 2) for h in range(24)],
        event(world.globex_key, "2026-04-01 05:00"),
    )
    rollup_sync()
    before = rows()
    cursor_before = BillingCursor.objects.get(name="rollups").position
    # Late usage arrives; the next rollup must rebuild April 1st.
    ingest(event(world.acme_key, "2026-04-01 07:45", prompt=5, completion=5))

    queue = f"billing-kill-{os.getpid()}"
    victim = Process(
        "rollup-victim",
        [
            str(BIN / "celery"),
            "-A",
            "apps.platform.celery_app",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "-n",
            f"victim-{os.getpid()}@%h",
            "--loglevel",
            "INFO",
        ],
        server_env,
    )
    wait_until(lambda: b"ready" in victim.log_path.read_bytes(), timeout=60)
    try:
        with transaction.atomic():
            # Hold a day row: the worker rebuilds every hour first, then blocks on the day.
            UsageRollup.objects.select_for_update().filter(
                granularity="day", bucket_start=datetime(2026, 4, 1, tzinfo=UTC)
            ).first()
            celery_app.send_task("billing.rollups", queue=queue)

            def blocked() -> bool:
                with connection.cursor() as c:
                    # Inside a transaction pg_stat_activity is a cached snapshot: refresh it.
                    c.execute("SELECT pg_stat_clear_snapshot()")
                    c.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query ILIKE %s AND pid <> pg_backend_pid()",
                        ["%billing_usagerollup%"],
                    )
                    return c.fetchone()[0] > 0

            wait_until(blocked, timeout=60)
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
        # The dead worker's transaction never commits.
        wait_until(lambda: not blocked_or_idle_in_transaction(), timeout=60)
    finally:
        victim.stop()
    # The killed worker's partial work never shows: what is there is the old state.
    after_kill = rows()
    cursor_after_kill = BillingCursor.objects.get(name="rollups").position

    rollup_sync()
    after = rows()
    assert after != before
    assert after_kill == before
    assert cursor_after_kill == cursor_before
    UsageRollup.objects.all().delete()
    rollup_window_recompute(
        start=datetime(2026, 4, 1, tzinfo=UTC), end=datetime(2026, 4, 3, tzinfo=UTC)
    )
    assert rows() == after
    assert reconcile_run(
        window_start=datetime(2026, 4, 1, tzinfo=UTC),
        window_end=datetime(2026, 4, 3, tzinfo=UTC) + timedelta(hours=1),
    ).ok


def blocked_or_idle_in_transaction() -> bool:
    with connection.cursor() as c:
        c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND query ILIKE %s"
            " AND state IN ('active', 'idle in transaction')",
            ["%billing_usagerollup%"],
        )
        return c.fetchone()[0] > 0
