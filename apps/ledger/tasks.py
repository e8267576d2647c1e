import socket

from celery import shared_task

from apps.ledger.services import usage_ingest


@shared_task(name="ledger.ingest", ignore_result=True)
def ledger_ingest() -> int:
    # One consumer name per worker process, so a dead worker's entries can be reclaimed.
    import os

    return usage_ingest(consumer=f"{socket.gethostname()}-{os.getpid()}")
