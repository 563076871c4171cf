"""Batch tests: is this one batch of a source's bytes fit to pool? (P5)

Theory of operation
-------------------
The SP 800-90B continuous tests in :mod:`qrng_dd.collector.health` catch a source that gets stuck or
collapses onto one value, but they are built to be tolerant: a source whose bits are 1 with
P = 0.65 (about 5 bits of min-entropy per byte against the claimed 7) passes them for tens of
kilobytes. The tests here look at each fetched batch as a whole and ask whether it could have
come from a uniform source at all:

* **monobit**: the count of one-bits, a two-sided z-test (catches bias of any direction);
* **poker**: a chi-square over the 16 nibble values (15 degrees of freedom), as in
  FIPS 140-2 but with a cutoff from ``alpha`` instead of a fixed table;
* **bytes**: a chi-square over the 256 byte values (255 degrees of freedom);
* **runs**: the number of runs of equal bits (Wald-Wolfowitz), a two-sided z-test (catches
  bits that stick or alternate);
* **repeat**: a 16-byte stretch that the source has already produced, in this batch or in its
  last :data:`REPEAT_MEMORY` fingerprints (about 64 MiB of its output): a source replaying its
  own buffer passes every statistical test, byte for byte.

Cutoffs come from ``alpha``, the false-alarm probability per batch (the collector passes
``2^-QRNG_HEALTH_ALPHA_LOG2``, default 2^-40), split evenly over the four statistical tests
(Bonferroni): at 2^-40 the z cutoffs are 7.3 standard deviations, so a perfect source raises
a chance alarm once per 2^42 batches, while bias 0.1 (P(1) = 0.55) moves the monobit statistic
by 14 standard deviations in the smallest batch allowed (:data:`MIN_BATCH_BYTES`, the 20,000
bits of a FIPS 140-2 block) and by 18 in the default 4 KiB.

Repeat fingerprints are anchored on content, not on offsets: every zero byte starts one, the
hash of the 16 bytes that follow it. A replayed stretch therefore yields the same fingerprints
wherever it lands in a batch; one of 4 KiB holds about 16 of them. The hash is Python's
``hash()`` of bytes (SipHash with this process's random key), so no entropy byte is kept;
a chance collision with 2^18 stored fingerprints is 2^-46 per lookup. The fingerprints are
kept in a :class:`RepeatMemory`, 2 MiB of int64 allocated once, when the tester is made: it
never grows as it fills (a set of Python ints took ~25 MB per source and minutes to fill,
which looked like a leak).

Pure: numpy and the standard library, no I/O, no clock.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_BATCH_BYTES",
    "REPEAT_MEMORY",
    "BatchTest",
    "BatchTester",
    "RepeatMemory",
    "chi2_cutoff",
    "chi2_sf",
    "z_cutoff",
]

#: Smallest batch the tests have power on: one FIPS 140-2 block of 20,000 bits.
MIN_BATCH_BYTES = 2500
#: Fingerprints remembered per source (~256 bytes of output each: about 64 MiB, 2 MiB RAM).
REPEAT_MEMORY = 1 << 18
#: The repeat memory's sorted segments; the oldest is forgotten whole when the newest is full.
REPEAT_SEGMENTS = 8
#: Bytes hashed after each zero byte.
FINGERPRINT_BYTES = 16
_STATISTICAL_TESTS = 4

_U8 = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]
_POPCOUNT = np.array([v.bit_count() for v in range(256)], dtype=np.int64)
_INNER_TRANSITIONS = np.array([((v ^ (v >> 1)) & 0x7F).bit_count() for v in range(256)], np.int64)


class BatchTest(enum.StrEnum):
    """The batch test that refused a batch."""

    MONOBIT = "monobit"
    POKER = "poker"
    BYTES = "bytes"
    RUNS = "runs"
    REPEAT = "repeat"


def _normal_sf2(z: float) -> float:
    """P(|Z| >= z) for a standard normal Z."""
    return math.erfc(z / math.sqrt(2.0))


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with ``df`` degrees of freedom.

    The regularized upper incomplete gamma Q(df/2, x/2): its series below the mean, its
    continued fraction (modified Lentz) above, both in log space so tails far below 2^-40
    stay accurate (the cutoffs are solved against them).
    """
    if x <= 0:
        return 1.0
    a, y = df / 2.0, x / 2.0
    log_front = a * math.log(y) - y - math.lgamma(a)
    if y < a + 1.0:  # P(a, y) by its series; Q = 1 - P
        term = total = 1.0 / a
        n = a
        while abs(term) > abs(total) * 1e-16:
            n += 1.0
            term *= y / n
            total += term
        return max(0.0, 1.0 - math.exp(log_front + math.log(total)))
    tiny = 1e-300
    b = y + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(log_front + math.log(h))


def _solve_upper(sf: Callable[[float], float], alpha: float, hi: float) -> float:
    """The x with ``sf(x) == alpha`` for a decreasing ``sf``, by bisection from [0, hi]."""
    lo = 0.0
    while sf(hi) > alpha:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if sf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def z_cutoff(alpha: float) -> float:
    """The two-sided normal cutoff: P(|Z| >= z) = alpha."""
    return _solve_upper(_normal_sf2, alpha, 10.0)


def chi2_cutoff(df: int, alpha: float) -> float:
    """The chi-square cutoff: P(X >= x) = alpha with ``df`` degrees of freedom."""
    return _solve_upper(lambda x: chi2_sf(x, df), alpha, 2.0 * df + 100.0)


class BatchTester:
    """The batch tests for one source, with its repeat memory.

    :meth:`check` returns the first test a batch fails, or None; the caller discards a failed
    batch (and any batch it holds back from the same source) and quarantines the source.
    """

    def __init__(self, alpha_log2: int, memory: int = REPEAT_MEMORY) -> None:
        """Cutoffs for a false-alarm probability of ``2^-alpha_log2`` per batch.

        Raises:
            ValueError: ``alpha_log2`` below 1 or ``memory`` below 1.
        """
        if alpha_log2 < 1 or memory < 1:
            msg = "alpha_log2 and memory must be at least 1"
            raise ValueError(msg)
        each = 2.0**-alpha_log2 / _STATISTICAL_TESTS
        self.z = z_cutoff(each)
        self.poker = chi2_cutoff(15, each)
        self.bytes = chi2_cutoff(255, each)
        self.memory = memory
        self._seen = RepeatMemory(memory)

    def check(self, batch: bytes) -> BatchTest | None:
        """Run every test on ``batch``; its fingerprints are remembered whatever the verdict.

        Raises:
            ValueError: ``batch`` shorter than :data:`MIN_BATCH_BYTES`.
        """
        if len(batch) < MIN_BATCH_BYTES:
            msg = f"a batch must hold at least {MIN_BATCH_BYTES} bytes, got {len(batch)}"
            raise ValueError(msg)
        x: _U8 = np.frombuffer(batch, dtype=np.uint8)
        repeated = self._remember(batch, x)
        # One byte histogram feeds every statistic: ones, nibbles and the runs inside each
        # byte are functions of the byte value (about 3 ms per MiB in all, make bench).
        counts = np.bincount(x, minlength=256)
        bits = 8 * x.size
        ones = int(counts @ _POPCOUNT)
        if abs(ones - bits / 2) / math.sqrt(bits / 4) >= self.z:
            return BatchTest.MONOBIT
        by_nibble = counts.reshape(16, 16)
        if _chi2(by_nibble.sum(axis=1) + by_nibble.sum(axis=0), 2 * x.size) >= self.poker:
            return BatchTest.POKER
        if _chi2(counts, x.size) >= self.bytes:
            return BatchTest.BYTES
        # Runs = 1 + bit transitions: inside each byte (bit i vs bit i+1), then between the
        # last bit of one byte and the first of the next.
        across = int(np.count_nonzero((x[:-1] & 1) != (x[1:] >> 7)))
        runs = 1 + int(counts @ _INNER_TRANSITIONS) + across
        if abs(runs - (bits + 1) / 2) / math.sqrt((bits - 1) / 4) >= self.z:
            return BatchTest.RUNS
        return BatchTest.REPEAT if repeated else None

    def _remember(self, batch: bytes, x: _U8) -> bool:
        """Fingerprint ``batch``; true if any fingerprint was seen before (or twice in it)."""
        anchors = np.flatnonzero(x[: x.size - FINGERPRINT_BYTES] == 0) + 1
        fingerprints = np.fromiter(
            (hash(batch[i : i + FINGERPRINT_BYTES]) for i in anchors.tolist()),
            dtype=np.int64,
            count=anchors.size,
        )
        distinct = np.unique(fingerprints)
        known = self._seen.seen(distinct)
        self._seen.add(distinct[~known])
        return distinct.size < fingerprints.size or bool(known.any())


class RepeatMemory:
    """The last fingerprints of one source, in memory allocated once: it never grows.

    A ring of :data:`REPEAT_SEGMENTS` sorted int64 arrays. New fingerprints are merged into the
    current segment; when it is full, the oldest segment is emptied and becomes the current
    one. So it remembers at least the last ``capacity - capacity / segments`` fingerprints and
    at most ``capacity`` (rounded up to whole segments), and a lookup is one binary search
    per segment.
    """

    def __init__(self, capacity: int, segments: int = REPEAT_SEGMENTS) -> None:
        self.segments = max(1, min(segments, capacity))
        self.segment_size = -(-capacity // self.segments)
        # One slot more per segment, a copy of its last value, so a binary search that lands
        # past the end compares with a value of the segment, never with a stale one. Written
        # whole now (np.full, not the lazily mapped np.zeros), so the process's RSS holds all
        # of it from the start instead of creeping up while it fills.
        self._rows: _I64 = np.full((self.segments, self.segment_size + 1), 0, dtype=np.int64)
        self._fill = [0] * self.segments
        self._current = 0

    def __len__(self) -> int:
        return sum(self._fill)

    @property
    def nbytes(self) -> int:
        """The memory it holds, the same from the start."""
        return self._rows.nbytes

    def seen(self, fingerprints: _I64) -> npt.NDArray[np.bool_]:
        """Which of ``fingerprints`` are remembered."""
        found = np.zeros(fingerprints.size, dtype=np.bool_)
        for row, fill in zip(self._rows, self._fill, strict=True):
            if fill:
                found |= row[row[:fill].searchsorted(fingerprints)] == fingerprints
        return found

    def add(self, fresh: _I64) -> None:
        """Remember ``fresh``: sorted, distinct and none of them remembered already."""
        size = self.segment_size
        while fresh.size:
            fill = self._fill[self._current]
            if fill == size:  # the current segment is full: forget the oldest
                self._current = (self._current + 1) % self.segments
                self._fill[self._current] = 0
                continue
            part, fresh = fresh[: size - fill], fresh[size - fill :]
            end = fill + part.size
            row = self._rows[self._current]
            # Two sorted runs; what is below the first new value is already in place.
            start = int(row[:fill].searchsorted(part[0]))
            row[fill:end] = part
            row[start:end].sort(kind="stable")  # a merge of the two runs
            row[end] = row[end - 1]
            self._fill[self._current] = end


def _chi2(counts: npt.NDArray[np.int64], total: int) -> float:
    """Pearson's statistic of ``counts`` against a uniform expectation of ``total``."""
    cells = counts.size
    return float(cells * np.dot(counts, counts) / total - total)
