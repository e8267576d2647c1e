"""Embedded default: no Celery, so the web process ingests the usage stream itself."""

import asyncio
import logging

from asgiref.sync import sync_to_async

from apps.ledger.services import usage_ingest

log = logging.getLogger(__name__)


async def ingest_forever(interval_s: float = 0.5) -> None:
    while True:
        try:
            await sync_to_async(usage_ingest)(consumer="embedded")
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep ingesting; the entries stay pending
            log.exception("embedded usage ingest failed")
        await asyncio.sleep(interval_s)
