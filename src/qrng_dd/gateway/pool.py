"""The entropy pool: a fixed-capacity byte FIFO that never returns a byte twice (DESIGN §4).

Pure and synchronous. The gateway runs it on one event loop, so every method runs to
completion without interleaving; no lock is needed and none is taken.

Layout: a deque of ``(chunk, arrival_time)`` plus an offset into the head chunk. Adding a
packet appends one chunk (no copy of the pool); taking ``n`` bytes slices at most the chunks
it spans, so the cost is proportional to ``n``, never to the pool's size.

Invariants:

- ``available`` is the sum of unread chunk bytes and never exceeds ``capacity``.
- A byte leaves the pool exactly once: through ``take`` / a committed :class:`Draw`
  (served) or through eviction under the ``replace`` policy (counted, never served).
- A request that fails takes nothing: :meth:`take` checks before it removes, and a
  :class:`Draw` reads ahead without removing until :meth:`Draw.commit`.
- Nothing is ever written to disk (P6).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

from qrng_dd.errors import EntropyExhaustedError

OverflowPolicy = Literal["discard", "replace"]
POLICIES: Final[tuple[OverflowPolicy, ...]] = ("discard", "replace")


class EntropyPool:
    """Fixed-capacity FIFO of entropy bytes."""

    def __init__(
        self,
        capacity: int,
        policy: OverflowPolicy = "discard",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            msg = "capacity must be at least one byte"
            raise ValueError(msg)
        if policy not in POLICIES:
            msg = f"unknown overflow policy {policy!r}"
            raise ValueError(msg)
        self.capacity = capacity
        self.policy: OverflowPolicy = policy
        self._clock = clock
        self._chunks: deque[tuple[bytes, float]] = deque()
        self._head = 0  # bytes of the first chunk already taken
        self.available = 0
        self.added_total = 0
        self.taken_total = 0
        self.dropped_total = 0  # refused on arrival under "discard"
        self.evicted_total = 0  # pushed out under "replace"

    @property
    def fill_percent(self) -> float:
        return 100.0 * self.available / self.capacity

    @property
    def free(self) -> int:
        return self.capacity - self.available

    def oldest_age(self) -> float:
        """Seconds since the oldest byte still in the pool arrived (0 when empty)."""
        if not self._chunks:
            return 0.0
        return max(0.0, self._clock() - self._chunks[0][1])

    def add(self, data: bytes) -> int:
        """Add ``data``; return how many of its bytes were kept.

        Under ``discard``, what does not fit is dropped; under ``replace``, the oldest bytes
        are evicted to make room (and a packet larger than the whole pool keeps its newest
        ``capacity`` bytes).
        """
        if not data:
            return 0
        if self.policy == "discard":
            keep = min(len(data), self.free)
            self.dropped_total += len(data) - keep
            data = data[:keep]
        else:
            if len(data) > self.capacity:
                self.dropped_total += len(data) - self.capacity
                data = data[-self.capacity :]
            self._evict(len(data) - self.free)
        if data:
            self._chunks.append((bytes(data), self._clock()))
            self.available += len(data)
            self.added_total += len(data)
        return len(data)

    def _evict(self, n: int) -> None:
        if n > 0:
            self._remove(n)
            self.evicted_total += n

    def take(self, n: int) -> bytes:
        """Remove and return exactly ``n`` bytes.

        Raises:
            EntropyExhaustedError: fewer than ``n`` bytes are available; nothing was taken.
        """
        if n > self.available:
            raise EntropyExhaustedError(n, self.available)
        data = self._remove(n)
        self.taken_total += n
        return data

    def maybe_take(self, n: int) -> bytes | None:
        """Like :meth:`take`, but ``None`` when short."""
        return self.take(n) if n <= self.available else None

    def draw(self) -> Draw:
        """Start a read-ahead that removes nothing until committed."""
        return Draw(self)

    def _remove(self, n: int) -> bytes:
        parts: list[bytes] = []
        self.available -= n
        while n:
            chunk, _ = self._chunks[0]
            end = self._head + n
            if end < len(chunk):
                parts.append(chunk[self._head : end])
                self._head = end
                break
            parts.append(chunk[self._head :] if self._head else chunk)
            n -= len(chunk) - self._head
            self._chunks.popleft()
            self._head = 0
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _peek(self, start: int, n: int) -> bytes:
        """``n`` bytes starting ``start`` bytes past the read position, not removed."""
        parts: list[bytes] = []
        offset = self._head + start
        for chunk, _ in self._chunks:
            if offset >= len(chunk):
                offset -= len(chunk)
                continue
            piece = chunk[offset : offset + n]
            parts.append(piece)
            n -= len(piece)
            offset = 0
            if not n:
                break
        return b"".join(parts)


class Draw:
    """A read-ahead over the pool for derivations whose byte count is not known up front.

    Rejection sampling may need more bytes after looking at the first ones. A ``Draw`` hands
    them out in order without removing them; :meth:`commit` removes exactly what was read.
    If the request fails part-way (the pool ran short), the draw is simply dropped and the
    pool is as it was: bytes that were only looked at were never served to anyone.
    """

    __slots__ = ("_pool", "consumed")

    def __init__(self, pool: EntropyPool) -> None:
        self._pool = pool
        self.consumed = 0

    def read(self, n: int) -> bytes:
        """The next ``n`` unread bytes.

        Raises:
            EntropyExhaustedError: the pool cannot supply them.
        """
        end = self.consumed + n
        if end > self._pool.available:
            raise EntropyExhaustedError(end, self._pool.available)
        data = self._pool._peek(self.consumed, n)
        self.consumed = end
        return data

    def commit(self) -> int:
        """Remove the bytes read; return how many."""
        self._pool.take(self.consumed)
        return self.consumed
