"""Embedded default (no REDIS_URL): no Celery worker runs, so the web process runs the
beat schedule itself — ledger ingest, rollups, statements, reconciliations — in its
event loop, each task in a worker thread at its own interval. One process only."""

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings

log = logging.getLogger(__name__)


async def run_schedule_forever(tick_s: float = 0.5) -> None:
    from apps.core.beat import beat_tick_record
    from apps.platform.celery_app import app

    app.loader.import_default_modules()  # registers the tasks of every app
    due = {name: 0.0 for name in settings.CELERY_BEAT_SCHEDULE}
    while True:
        beat_tick_record()
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
            if time.monotonic() < due[name]:
                continue
            due[name] = time.monotonic() + float(entry["schedule"])
            task = app.tasks.get(entry["task"])
            if task is None:
                continue
            try:
                await sync_to_async(task.run)()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the schedule going; the work is retried
                log.exception("embedded task %s failed", entry["task"])
        await asyncio.sleep(tick_s)
