import socket

from celery import shared_task

from apps.ledger.partitions import partitions_ensure, partitions_retire
from apps.ledger.services import usage_ingest


@shared_task(name="ledger.ingest", ignore_result=True)
def ledger_ingest() -> int:
    # One consumer name per worker process, so a dead worker's entries can be reclaimed.
    import os

    return usage_ingest(consumer=f"{socket.gethostname()}-{os.getpid()}")


@shared_task(name="ledger.partitions", ignore_result=True)
def ledger_partitions() -> dict:
    """Months ahead made, then months past retention dropped (each only once billed)."""
    return {"created": partitions_ensure(), "dropped": partitions_retire()}
