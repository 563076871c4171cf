"""Hand-written fakes the collector's pure core takes instead of the real clock."""

from __future__ import annotations


class FakeClock:
    """Seconds that move only when a test moves them (``clock.now += 5``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
