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

    @property
    def enabled(self) -> bool:
        """Whether a limit is configured."""
        return self.rate > 0

    async def retry_after(self, redis: Any, key_id: str) -> int | None:
        """``None`` when the request may go ahead, else whole seconds to wait (for ``Retry-After``)."""
        admitted, wait_ms = await redis.eval(lua.source("ratelimit_take"), 1, self.keys.bucket(key_id),
                                             self.rate, self.burst)  # fmt: skip
        if int(admitted):
            return None
        return max(1, math.ceil(int(wait_ms) / 1000))
