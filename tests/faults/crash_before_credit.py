"""Serve the platform (as `uvicorn apps.platform.asgi:application` does), except that the
process SIGKILLs itself at the moment a committed balance-journal entry would reach the
Redis balance: the crash between the journal insert and the Redis credit.

    python tests/faults/crash_before_credit.py --port N
"""

import argparse
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    import django

    django.setup()
    from apps.limits.balances import balance_credit
    from apps.wallet import services

    def die(tenant_id: int, amount: Decimal) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    # The Redis credit runs as a hook after the entry commits (apps/limits/apps.py).
    services._on_committed[services._on_committed.index(balance_credit)] = die

    import uvicorn

    uvicorn.run(
        "apps.platform.asgi:application",
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


if __name__ == "__main__":
    main()
