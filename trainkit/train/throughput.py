"""A sustained drop in tokens/s: what thermal throttling, Low Power Mode or a busy machine look like from inside.

    watch = ThroughputWatch()
    message = watch.observe(tokens_per_second, clean=True)   # a WARNING's text when a drop begins, else None

The baseline is the best median of three consecutive clean intervals (no evaluation or save inside
them, not the first after a start); a drop is DROP_LOGS clean intervals in a row under DROP_SHARE of
it. It is said once, and again only after the speed came back (RECOVER_SHARE) and fell again.
"""

from __future__ import annotations

import statistics

DROP_SHARE = 0.7
RECOVER_SHARE = 0.9
DROP_LOGS = 3
WINDOW = 3


class ThroughputWatch:
    def __init__(self):
        self.recent: list[float] = []
        self.baseline: float | None = None
        self.low = 0
        self.dropped = False

    def observe(self, tokens_per_second: float | None, clean: bool = True) -> str | None:
        if not tokens_per_second or not clean:
            return None
        self.recent = [*self.recent, tokens_per_second][-WINDOW:]
        if self.baseline is not None and tokens_per_second < DROP_SHARE * self.baseline:
            self.low += 1
        else:
            self.low = 0
            if self.baseline is not None and tokens_per_second >= RECOVER_SHARE * self.baseline:
                self.dropped = False
        if self.low == 0 and len(self.recent) == WINDOW:
            self.baseline = max(self.baseline or 0.0, statistics.median(self.recent))
        if self.low >= DROP_LOGS and not self.dropped:
            self.dropped = True
            share = 1 - tokens_per_second / self.baseline
            return (f"throughput fell to {tokens_per_second:,.0f} tokens/s from {self.baseline:,.0f} (-{share:.0%}) "
                    f"over the last {DROP_LOGS} logging intervals")
        return None
