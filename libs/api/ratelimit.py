"""Per-API-key rate limits: a token bucket in Redis per key (``ZAPQ_API_RATE_PER_SECOND``, ``…_BURST``)."""

from __future__ import annotations

import math
from typing import Any

from libs import lua
from libs.keys import RateLimitKeys


class RateLimiter:
    """Takes one token from a key's bucket per request; answers how long to wait when it is empty."""

    def __init__(self, namespace: str, rate_per_second: float, burst: int) -> None:
        self.keys = RateLimitKeys(namespace)
        self.rate = rate_per_second
        self.burst = burst
        self._script: Any = None

    @property
    def enabled(self) -> bool:
        """Whether a limit is configured."""
        return self.rate > 0

    async def retry_after(self, redis: Any, key_id: str) -> int | None:
        """``None`` when the request may go ahead, else whole seconds to wait (for ``Retry-After``)."""
        if self._script is None:  # EVALSHA on the API's own client (loaded into Redis on first use)
            self._script = redis.register_script(lua.source("ratelimit_take"))
        admitted, wait_ms = await self._script(keys=[self.keys.bucket(key_id)], args=[self.rate, self.burst])
        if int(admitted):
            return None
        return max(1, math.ceil(int(wait_ms) / 1000))
