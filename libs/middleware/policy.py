"""Retry policies as data: how many attempts a job gets and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from libs import contracts

Kind = Literal["exponential", "fixed"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` total tries (``None`` = until it succeeds); waits ``base_ms``·2ⁿ or a fixed ``base_ms``.

    ``jitter`` is a fraction (0.1 = ±10 %) applied after the cap; ``permanent`` lists extra exception types
    that dead-letter at once for this policy (``PermanentError`` always does).
    """

    attempts: int | None
    kind: Kind
    base_ms: int
    cap_ms: int | None = None
    jitter: float = 0.0
    permanent: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if self.base_ms < 0 or not 0 <= self.jitter < 1:
            raise ValueError("base_ms must be >= 0 and jitter in [0, 1)")
        # Anything but "fixed" would otherwise silently behave as "exponential".
        if self.kind not in ("exponential", "fixed"):
            raise ValueError(f"unknown retry policy kind {self.kind!r}: use 'exponential' or 'fixed'")
        if self.cap_ms is not None and self.cap_ms < 0:
            raise ValueError("cap_ms must be >= 0")

    def delay_ms(self, failed_attempts: int, rng: random.Random | None = None) -> int:
        """Wait before the next try after ``failed_attempts`` (≥ 1) failures."""
        delay = self.base_ms if self.kind == "fixed" else self.base_ms * 2 ** (failed_attempts - 1)
        if self.cap_ms is not None:
            delay = min(delay, self.cap_ms)
        if self.jitter:
            delay *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return int(delay)

    def exhausted(self, failed_attempts: int) -> bool:
        """True when no try is left after ``failed_attempts`` failures."""
        return self.attempts is not None and failed_attempts >= self.attempts


#: The defaults of the design: "attempts" are total tries.
DEFAULT_POLICIES: dict[str, RetryPolicy] = {
    contracts.WEBHOOKS: RetryPolicy(attempts=3, kind="exponential", base_ms=2_000),
    contracts.MESSAGES_URGENT: RetryPolicy(attempts=5, kind="exponential", base_ms=3_000),
    contracts.MESSAGES: RetryPolicy(attempts=5, kind="exponential", base_ms=3_000),
    contracts.MESSAGES_LOW: RetryPolicy(attempts=5, kind="exponential", base_ms=3_000),
    contracts.CAMPAIGNS: RetryPolicy(attempts=2, kind="fixed", base_ms=5_000),
    # The recorder must outlive a Postgres outage: it retries until it succeeds, at most every 30 s.
    contracts.DEAD_LETTER: RetryPolicy(attempts=None, kind="exponential", base_ms=1_000, cap_ms=30_000),
    contracts.MAINTENANCE: RetryPolicy(attempts=2, kind="fixed", base_ms=5_000),
    # A download refused (size or hash) or whose URL expired is tried again with a fresh URL; Meta keeps an
    # inbound media id 7 days, so the last attempts wait long enough to outlive a provider outage.
    contracts.MEDIA: RetryPolicy(attempts=6, kind="exponential", base_ms=5_000, cap_ms=600_000, jitter=0.1),
}

#: For a queue the design does not name.
FALLBACK_POLICY = RetryPolicy(attempts=3, kind="exponential", base_ms=1_000)
