"""How deferrals are logged: each at DEBUG, and once a minute one INFO line counting them per cause.

A throttled campaign defers thousands of sends a minute for one reason ("connection send rate limit"); one INFO
line each buried everything else (2,802 lines for a 600-recipient campaign at 10/s). :class:`DeferralLog`
keeps the detail at DEBUG and says at INFO, per window, how many jobs of which actor were deferred for what.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

#: Seconds one summary covers.
DEFAULT_WINDOW_S = 60.0
#: Characters of a deferral's reason kept as its cause (a reason holding an exception's text varies).
CAUSE_CHARS = 120


class DeferralLog:
    """Counts deferrals per (actor, cause) and logs the counts every ``window_s`` seconds (thread-safe)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._since = clock()

    def record(self, job_id: str, actor: str, delay_ms: int, reason: str) -> None:
        """One deferral: a DEBUG line now, counted for the next summary."""
        self.logger.debug("deferred message %s of %s by %d ms: %s", job_id, actor, delay_ms, reason)
        with self._lock:
            self._counts[(actor, reason[:CAUSE_CHARS])] += 1
        self.flush_due()

    def flush_due(self) -> None:
        """Log the summary if its window has ended (cheap when it has not)."""
        if self.clock() - self._since >= self.window_s:
            self.flush()

    def flush(self) -> None:
        """Log the counts so far as one INFO line (nothing when there were none) and start a new window."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            elapsed, self._since = self.clock() - self._since, self.clock()
        if not counts:
            return
        parts = "; ".join(f"{n} × {actor} ({cause})" for (actor, cause), n in counts.most_common())
        self.logger.info("deferred %d job(s) in the last %.0f s: %s", sum(counts.values()), elapsed, parts)
