"""The process's own load, checked when a request arrives: the one refusal for overload.

A process takes requests until it holds ``max_in_flight`` of them or its event loop runs
``max_lag_s`` late (a timer fires that much after it was due: every callback waits that
long, so every open stream's chunks do). Past either bound a new request is refused at
once (``GatewayOverloaded``: 503, Anthropic 529 ``overloaded_error``, Retry-After), before
anything is authenticated, admitted or sent; the requests already held go on, slower.
Everything below the bounds is admitted: concurrency limits are the operator's
``max_concurrent``, never a pool or a queue of the gateway's.
"""

import asyncio
import contextlib
import resource

# How often the loop's lateness is read: a timer this often costs nothing measurable.
LAG_PROBE_S = 0.25


def default_max_in_flight() -> int:
    """Half the process's open-file limit (a stream holds a client and an upstream
    socket), less a margin for the database, Redis and the log. The soft limit is raised
    to the hard one first: a distribution's default soft limit (often 1,024) would
    otherwise cap a process at a few hundred streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max((soft - 256) // 2, 64)


class ProcessLoad:
    """``in_flight``: the requests this process holds now; ``lag_s``: how late the event
    loop ran the last probe. ``overloaded()``: past either bound."""

    __slots__ = ("max_in_flight", "max_lag_s", "in_flight", "lag_s", "_last_late_s")

    def __init__(self, *, max_in_flight: int, max_lag_s: float) -> None:
        self.max_in_flight = max_in_flight if max_in_flight > 0 else default_max_in_flight()
        self.max_lag_s = max_lag_s  # 0: no lag bound
        self.in_flight = 0
        self.lag_s = 0.0
        self._last_late_s = 0.0

    def overloaded(self) -> bool:
        if self.in_flight >= self.max_in_flight:
            return True
        return 0 < self.max_lag_s <= self.lag_s

    async def watch_lag(self) -> None:
        """Forever: the loop's lateness, probed every LAG_PROBE_S. ``lag_s`` is the
        lesser of the last two probes': a loop late once (a collection, a loop stopped
        and restarted) is no overload, one late probe after probe is."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                due = loop.time() + LAG_PROBE_S
                await asyncio.sleep(LAG_PROBE_S)
                late = max(loop.time() - due, 0.0)
                self.lag_s = min(late, self._last_late_s)
                self._last_late_s = late
