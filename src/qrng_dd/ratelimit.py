"""Token buckets per API key: requests per second and, optionally, bytes per second.

Pure: the clock is injected. One bucket pair per key, created on first use; the number of
keys is fixed by configuration, so memory is bounded.

A request must fit in *both* buckets, and is charged to neither if it fits in only one, so a
refused request costs the client nothing but the refusal.

:meth:`TokenBucket.reserve` is the other way to spend tokens: it always takes them, running into
debt, and says how long the debt takes to pay back. The appliance simulator caps its bit rate
with it (a slow device makes readers wait, it never refuses them). A clock that steps backwards
refills nothing.
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
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
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

    def reserve(self, name: str, cost: float, now: float) -> float:
        """Take ``cost`` tokens whether they are there or not; return the wait they imply.

        The bucket runs into debt, so callers reserving one after the other queue in arrival
        order, each behind the debt of those before it.

        Returns:
            0.0 when the tokens were there, else the seconds until the debt is paid back.
        """
        bucket = self._refill(name, now)
        bucket.tokens -= cost
        return 0.0 if bucket.tokens >= 0 else -bucket.tokens / self.rate

    def left(self, name: str | None, now: float) -> tuple[int, int]:
        """(whole tokens left, seconds until full) for ``name`` (``None``: a full bucket)."""
        tokens = self.burst
        if name is not None and name in self._buckets:
            tokens = self._refill(name, now).tokens
        return max(0, math.floor(tokens)), max(0, math.ceil((self.burst - tokens) / self.rate))

    def state(self, label: str, name: str, now: float) -> str:
        """``"label";r=remaining;t=seconds-until-full``: the RateLimit field item, built on
        every authenticated answer, so without the :class:`Quota` detour."""
        remaining, reset = self.left(name, now)
        return f'"{label}";r={remaining};t={reset}'

    def quota(self, label: str, name: str | None, now: float) -> Quota:
        """The bucket of ``name`` as a quota (``None``: the policy alone, a full bucket)."""
        remaining, reset = self.left(name, now)
        window = max(1, math.ceil(self.burst / self.rate))
        return Quota(label, int(self.burst), window, remaining, reset)


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as the RateLimit header fields state it: ``limit`` per ``window`` seconds,
    ``remaining`` now, full again in ``reset`` seconds."""

    name: str
    limit: int
    window: int
    remaining: int
    reset: int


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

    def check(self, key: str, nbytes: int = 0, *, request: bool = True) -> int:
        """Charge one request (unless ``request`` is false) of ``nbytes`` to ``key``.

        ``request=False`` charges bytes alone: a tool call inside an MCP request that was
        already charged as a request.

        Returns:
            0 when allowed, else the whole seconds to wait (for ``Retry-After``); nothing is
            charged then.
        """
        now = self._clock()
        wait = self._requests.wait_for(key, 1.0, now) if request else 0.0
        if self._bytes is not None and nbytes:
            wait = max(wait, self._bytes.wait_for(key, nbytes, now))
        if wait > 0:
            return max(1, math.ceil(wait))
        if request:
            self._requests.charge(key, 1.0)
        if self._bytes is not None and nbytes:
            self._bytes.charge(key, nbytes)
        return 0

    def state_field(self, key: str) -> str:
        """The ``RateLimit`` field value for ``key`` now (draft-ietf-httpapi-ratelimit-headers)."""
        now = self._clock()
        field = self._requests.state("requests", key, now)
        if self._bytes is not None:
            field += ", " + self._bytes.state("bytes", key, now)
        return field

    def quotas(self, key: str | None) -> list[Quota]:
        """The limits of ``key`` and what is left of them (``None``: the limits alone)."""
        now = self._clock()
        found = [self._requests.quota("requests", key, now)]
        if self._bytes is not None:
            found.append(self._bytes.quota("bytes", key, now))
        return found
