"""Token buckets per API key: requests per second and, optionally, bytes per second.

Pure: the clock is injected. One bucket pair per key, created on first use; the number of
keys is fixed by configuration, so memory is bounded.

A request must fit in *both* buckets, and is charged to neither if it fits in only one, so a
refused request costs the client nothing but the refusal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def _refill(self, name: str, now: float) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def wait_for(self, name: str, cost: float, now: float) -> float:
        """Seconds until ``cost`` tokens are there (0 when they are there now).

        A cost above the burst is allowed once the bucket is full and leaves it in debt, so
        a large request is slowed, never refused forever.
        """
        bucket = self._refill(name, now)
        need = min(cost, self.burst)
        if bucket.tokens >= need:
            return 0.0
        return (need - bucket.tokens) / self.rate

    def charge(self, name: str, cost: float) -> None:
        self._buckets[name].tokens -= cost


class RateLimiter:
    """Per-key limits on requests and (when ``byte_rate`` > 0) on bytes."""

    def __init__(
        self,
        rate: float,
        burst: float,
        byte_rate: float = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._requests = TokenBucket(rate, max(burst, 1.0))
        # One second of budget as burst: enough for a client to take its share in one go.
        self._bytes = TokenBucket(byte_rate, byte_rate) if byte_rate > 0 else None
        self._clock = clock

    def check(self, key: str, nbytes: int = 0) -> int:
        """Charge one request of ``nbytes`` to ``key``.

        Returns:
            0 when allowed, else the whole seconds to wait (for ``Retry-After``); nothing is
            charged then.
        """
        now = self._clock()
        wait = self._requests.wait_for(key, 1.0, now)
        if self._bytes is not None and nbytes:
            wait = max(wait, self._bytes.wait_for(key, nbytes, now))
        if wait > 0:
            return max(1, math.ceil(wait))
        self._requests.charge(key, 1.0)
        if self._bytes is not None and nbytes:
            self._bytes.charge(key, nbytes)
        return 0
