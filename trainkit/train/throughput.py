"""A sustained drop in tokens/s: what thermal throttling, Low Power Mode or a busy machine look like from inside.

    watch = ThroughputWatch()
    message = watch.observe(tokens_per_second, since=interval_start, now=time.time(), clean=True)

`slow` is tokens/s under DROP_SHARE (half) of the run's median for SLOW_SECONDS (10 minutes) in a row.
The median is over the clean logging intervals (no evaluation or save inside them, not the first of a
start) outside the slow stretch itself, and needs MIN_INTERVALS of them first. The drop is said once,
and again only after the speed came back to RECOVER_SHARE of the median and fell again. The WARNING,
the `slow` event of events.jsonl and the `slow` notification all come from here.
"""

from __future__ import annotations

import statistics

DROP_SHARE = 0.5
SLOW_SECONDS = 600.0
RECOVER_SHARE = 0.8
MIN_INTERVALS = 3


class ThroughputWatch:
    def __init__(self):
        self.history: list[float] = []
        self.slow_since: float | None = None
        self.dropped = False

    @property
    def baseline(self) -> float | None:
        return statistics.median(self.history) if len(self.history) >= MIN_INTERVALS else None

    def observe(self, tokens_per_second: float | None, *, since: float, now: float, clean: bool = True) -> str | None:
        """`since`..`now` is the interval `tokens_per_second` was measured over; a message when a drop is due."""
        if not tokens_per_second or not clean:
            return None  # an evaluation or a save neither starts nor ends a slow stretch
        median = self.baseline
        if median is not None and tokens_per_second < DROP_SHARE * median:
            self.slow_since = since if self.slow_since is None else self.slow_since
            if now - self.slow_since >= SLOW_SECONDS and not self.dropped:
                self.dropped = True
                return (f"throughput fell to {tokens_per_second:,.0f} tokens/s, under half the run's median of "
                        f"{median:,.0f}, for {(now - self.slow_since) / 60:.0f} min")
            return None
        self.slow_since = None
        self.history.append(tokens_per_second)
        if median is not None and tokens_per_second >= RECOVER_SHARE * median:
            self.dropped = False
        return None
