"""Continuous health tests for byte-wide entropy sources (NIST SP 800-90B §4.4).

Theory of operation
-------------------
Every appliance feeding the collector gets its own :class:`HealthMonitor`. Each fetched batch
is passed to :meth:`HealthMonitor.check` *before* it is mixed or pooled. The monitor treats every
byte as one 8-bit sample and runs the two approved continuous health tests of SP 800-90B over the
unbroken sample stream, carrying their state across batch boundaries, so a defect that straddles
two fetches is caught exactly as if it had arrived in one:

* **Repetition Count Test** (RCT, §4.4.1) catches a source that gets stuck: it fails when one
  value repeats ``C`` times in a row, with ``C = 1 + ceil(-log2(alpha) / H)``.
* **Adaptive Proportion Test** (APT, §4.4.2) catches a source that drifts towards one value: in
  every disjoint window of ``W = 512`` samples it counts how often the window's *first* sample
  occurs (the first sample included) and fails when that count reaches ``C``, the smallest ``c``
  with ``P(Binomial(W, 2^-H) >= c) <= alpha``.

``H`` is the min-entropy per sample that the operator claims for the appliance (default 7.0 bits
per byte, a deliberately modest claim for a QRNG) and ``alpha`` is the false-alarm probability
per test decision. §4.4 recommends 2^-40 <= alpha <= 2^-20; its tables use 2^-20. Smaller claims
and smaller alphas give larger cutoffs, i.e. more tolerant tests. Cutoffs (APT with W = 512):

==========  ==========  ==========  ==========
H (bits)    alpha       RCT cutoff  APT cutoff
==========  ==========  ==========  ==========
8.0         2^-20       4           13
7.0         2^-20       4           18
8.0         2^-40       6           19
7.0         2^-40       7           26
==========  ==========  ==========  ==========

This module defaults to alpha = 2^-40 (:data:`DEFAULT_ALPHA_LOG2`). Alpha is a rate *per
sample*: at 2^-20 the RCT cutoff is 4, and a perfect byte source repeats a value four times once
per 256^3 = 2^24 samples, i.e. it would be quarantined by chance every 16 MiB -- every few minutes
at the collector's default rate, every second at tens of MB/s. At 2^-40 (cutoff 7 for H = 7) a
perfect source raises a chance RCT alarm once per 2^48 bytes (about 280 TB), the APT far less
often, while a stuck source is still caught within 7 samples.

Start-up (§4.3): after creation, after :meth:`HealthMonitor.reset` and after every quarantine
retry, the first :data:`STARTUP_SAMPLES` samples must pass both tests before the source is
``healthy``; until then it is ``startup`` and no batch is released. The batch that completes the
start-up test is released whole: every sample in it has passed both tests, and (as we read §4.3)
samples tested at start-up may be used once the start-up test has succeeded.

A batch is released only as a whole: :attr:`HealthResult.ok` is true iff every sample in it
passed and the source is healthy at its end. Anything else means the caller discards the whole
batch. A failure moves the source to ``quarantined``: it is cut off for an escalating
cool-down (:class:`~qrng_dd.collector.quarantine.Quarantine`), then retried with a fresh
start-up test.

The module is pure: no I/O, no clock. Time enters only as the ``now`` arguments (seconds on any
monotonic clock the caller chooses). An event that happens without a ``now`` (e.g. a failure in
``check(batch)`` called without one) is stamped with the next ``now`` the monitor sees, which can
only lengthen a cool-down, never shorten it.

Speed: both tests are vectorised with numpy, so checking costs a few passes over the batch
(hundreds of MB/s on one core), cheap enough to run on every byte.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qrng_dd.collector.quarantine import Quarantine

__all__ = [
    "APT_WINDOW",
    "DEFAULT_ALPHA_LOG2",
    "DEFAULT_CLAIMED_ENTROPY_BITS",
    "STARTUP_SAMPLES",
    "HealthMonitor",
    "HealthResult",
    "HealthTest",
    "SourceState",
    "apt_cutoff",
    "rct_cutoff",
]

# -log2(alpha), alpha the false-positive probability per test decision. SP 800-90B §4.4
# recommends 2^-40 <= alpha <= 2^-20. We take 2^-40: the collector tests every byte at up to
# tens of MB/s, and at 2^-20 a perfect source would fail the RCT by chance every 16 MiB (see the
# module docstring); at 2^-40 that is once per ~280 TB.
DEFAULT_ALPHA_LOG2 = 40

# Window size of the APT for non-binary samples (SP 800-90B §4.4.2: W = 512; 1024 is only for
# binary sources).
APT_WINDOW = 512

# SP 800-90B §4.3 (start-up testing): the continuous tests are run on at least 1024 consecutive
# samples before any output is used.
STARTUP_SAMPLES = 1024

# Claimed min-entropy per byte sample. A QRNG appliance is typically assessed near 8 bits per
# byte; claiming 7.0 keeps the tests tolerant (fewer false alarms) while still catching a stuck
# or grossly biased appliance within a few samples or windows.
DEFAULT_CLAIMED_ENTROPY_BITS = 7.0

_U8 = npt.NDArray[np.uint8]


def _check_entropy(h: float) -> None:
    if not (math.isfinite(h) and 0.0 < h <= 8.0):
        msg = f"claimed min-entropy must be in (0, 8] bits per byte sample, got {h!r}"
        raise ValueError(msg)


def _check_alpha(alpha_log2: int) -> None:
    if alpha_log2 < 1:
        msg = f"alpha_log2 (-log2 of the false-alarm rate) must be at least 1, got {alpha_log2}"
        raise ValueError(msg)


def rct_cutoff(h: float, alpha_log2: int = DEFAULT_ALPHA_LOG2) -> int:
    """
    Return the Repetition Count Test cutoff for a claimed min-entropy per sample.

    ``C = 1 + ceil(-log2(alpha) / H)`` (SP 800-90B §4.4.1): a run of ``C`` identical samples
    fails. With alpha = 2^-20 (the spec's tables) H = 8 and H = 7 both give 4; with the default
    alpha = 2^-40, H = 8 gives 6 and H = 7 gives 7.

    Args:
        h: claimed min-entropy in bits per byte sample, 0 < h <= 8.
        alpha_log2: ``-log2(alpha)``, at least 1.

    Returns:
        The cutoff ``C``; a run of ``C`` or more identical samples is a failure.

    Raises:
        ValueError: if ``h`` is outside (0, 8] or ``alpha_log2`` below 1.
    """
    _check_entropy(h)
    _check_alpha(alpha_log2)
    return 1 + math.ceil(alpha_log2 / h)


def apt_cutoff(h: float, window: int = APT_WINDOW, alpha_log2: int = DEFAULT_ALPHA_LOG2) -> int:
    """
    Return the Adaptive Proportion Test cutoff for a claimed min-entropy per sample.

    The cutoff is ``1 + CRITBINOM(W, 2^-H, 1 - alpha)`` of SP 800-90B §4.4.2, i.e. the smallest
    ``c`` with ``P(Binomial(W, 2^-H) >= c) <= alpha``. The binomial tail is summed term by
    term from the top in floating point, each term ``comb(W, k) p^k (1-p)^(W-k)`` evaluated in
    log space from the exact integer ``math.comb`` (terms too small for a float underflow to 0,
    which cannot move the result). For W = 512 and alpha = 2^-20: H = 8 gives 13, H = 7 gives 18
    (and H = 0.5, 1, 2, 4 give 410, 311, 177, 62, the values tabulated in §4.4.2); with the
    default alpha = 2^-40, H = 8 gives 19 and H = 7 gives 26.

    Args:
        h: claimed min-entropy in bits per byte sample, 0 < h <= 8.
        window: the APT window size ``W``.
        alpha_log2: ``-log2(alpha)``, at least 1.

    Returns:
        The cutoff; a window in which its first value occurs this often (or more) fails.

    Raises:
        ValueError: if ``h`` is outside (0, 8], ``window`` is below 2 or ``alpha_log2`` below 1.
    """
    _check_entropy(h)
    _check_alpha(alpha_log2)
    if window < 2:
        msg = f"APT window must be at least 2, got {window}"
        raise ValueError(msg)
    p = 2.0**-h
    log_p, log_q = math.log(p), math.log1p(-p)
    alpha = 2.0**-alpha_log2
    tail = 0.0  # P(X >= k) as k walks down from W
    for k in range(window, -1, -1):
        term = math.exp(math.log(math.comb(window, k)) + k * log_p + (window - k) * log_q)
        if tail + term > alpha:
            return k + 1
        tail += term
    return 0  # unreachable: P(X >= 0) = 1 > alpha


class SourceState(enum.StrEnum):
    """Health state of one entropy source, as shown in status, metrics and MCP."""

    HEALTHY = "healthy"
    STARTUP = "startup"
    QUARANTINED = "quarantined"


class HealthTest(enum.StrEnum):
    """The SP 800-90B §4.4 test that raised an alarm."""

    RCT = "rct"
    APT = "apt"


@dataclass(frozen=True, slots=True)
class HealthResult:
    """
    The verdict on one batch.

    Attributes:
        ok: true iff every sample passed and the source is healthy at the end of the batch, so
            the caller may use the batch. False: discard the WHOLE batch.
        state: the source's state after the batch.
        failed_test: the test that failed, or None (no failure: either passed, still in start-up,
            or the batch was refused unread because the source is quarantined).
        failure_offset: index in the batch of the sample at which the test reached its cutoff.
        samples_tested: how many samples of the batch were run through the tests.
    """

    ok: bool
    state: SourceState
    failed_test: HealthTest | None = None
    failure_offset: int | None = None
    samples_tested: int = 0


class HealthMonitor:
    """
    Continuous RCT + APT over one source's byte stream, with start-up test and quarantine.

    The test state (the current run for the RCT; the current window's first value, count and
    fill for the APT) is carried between :meth:`check` calls, so batches may be any size.
    """

    def __init__(
        self,
        claimed_entropy_bits: float = DEFAULT_CLAIMED_ENTROPY_BITS,
        *,
        alpha_log2: int = DEFAULT_ALPHA_LOG2,
        quarantine: Quarantine | None = None,
    ) -> None:
        """
        Create a monitor in the ``startup`` state.

        Args:
            claimed_entropy_bits: claimed min-entropy per byte sample, 0 < H <= 8.
            alpha_log2: ``-log2`` of the false-alarm rate per test decision (see module doc).
            quarantine: the cool-down policy; default :class:`Quarantine` with module defaults.

        Raises:
            ValueError: if ``claimed_entropy_bits`` is outside (0, 8] or ``alpha_log2`` below 1.
        """
        self.claimed_entropy_bits = claimed_entropy_bits
        self.alpha_log2 = alpha_log2
        self.rct_cutoff = rct_cutoff(claimed_entropy_bits, alpha_log2)
        self.apt_cutoff = apt_cutoff(claimed_entropy_bits, APT_WINDOW, alpha_log2)
        self.quarantine = quarantine if quarantine is not None else Quarantine()
        self.samples_total = 0  # every sample ever tested, for metrics
        self.reset()

    def reset(self) -> None:
        """Forget the test state and begin a fresh start-up test (keeps the failure history)."""
        self.state = SourceState.STARTUP
        self.quarantine.lift()
        self._since_reset = 0
        self._rct_tail: _U8 = np.empty(0, dtype=np.uint8)  # last <= C-1 samples seen
        self._apt_ref = 0  # first sample of the current window
        self._apt_count = 0  # occurrences of _apt_ref in the current window so far
        self._apt_fill = 0  # samples of the current window seen so far (0 = none)

    @property
    def failures(self) -> int:
        """Total health-test failures of this source since the monitor was created."""
        return self.quarantine.failures

    def cooldown_remaining(self, now: float) -> float:
        """Return seconds until a quarantined source may be retried; 0.0 if not quarantined."""
        return self.quarantine.cooldown_remaining(now)

    def ready_to_retry(self, now: float) -> bool:
        """Return true iff the source is quarantined and its cool-down has elapsed."""
        return self.state is SourceState.QUARANTINED and self.quarantine.ready_to_retry(now)

    def refuse(self, now: float | None = None) -> None:
        """Quarantine the source for a failure found outside these tests (a batch test).

        The same escalating cool-down and fresh start-up test follow as after an RCT or APT
        alarm, so every way of failing costs the source the same.
        """
        self.quarantine.tick(now)
        self.state = SourceState.QUARANTINED
        self.quarantine.record_failure(now)

    def check(self, batch: bytes, now: float | None = None) -> HealthResult:
        """
        Run the continuous health tests over the next batch of the source's stream.

        While quarantined the batch is refused unread; if ``now`` is given and the cool-down
        has elapsed, the source is first retried: a fresh start-up test begins with this batch.

        Args:
            batch: the bytes just fetched from the source, in order.
            now: the current time in seconds (any monotonic clock). Recommended: it stamps
                failures and healthy periods for the quarantine policy.

        Returns:
            The verdict; if ``ok`` is false the caller must discard the whole batch.
        """
        self.quarantine.tick(now)
        if self.state is SourceState.QUARANTINED:
            if now is None or not self.ready_to_retry(now):
                return HealthResult(ok=False, state=self.state)
            self.reset()
        x: _U8 = np.frombuffer(batch, dtype=np.uint8)
        rct_at, rct_tail = self._rct_scan(x)
        apt_at, apt_state = self._apt_scan(x)
        alarms = [
            (at, test)
            for at, test in ((rct_at, HealthTest.RCT), (apt_at, HealthTest.APT))
            if at is not None
        ]
        if alarms:
            offset, test = min(alarms)  # the earlier alarm; on a tie "apt" < "rct" sorts first
            self.samples_total += offset + 1
            self.state = SourceState.QUARANTINED
            self.quarantine.record_failure(now)
            return HealthResult(
                ok=False,
                state=self.state,
                failed_test=test,
                failure_offset=offset,
                samples_tested=offset + 1,
            )
        self._rct_tail = rct_tail
        self._apt_ref, self._apt_count, self._apt_fill = apt_state
        self._since_reset += x.size
        self.samples_total += x.size
        if self.state is SourceState.STARTUP and self._since_reset >= STARTUP_SAMPLES:
            self.state = SourceState.HEALTHY
            self.quarantine.record_healthy(now)
        return HealthResult(
            ok=self.state is SourceState.HEALTHY, state=self.state, samples_tested=x.size
        )

    def _rct_scan(self, x: _U8) -> tuple[int | None, _U8]:
        """Return the batch offset where a run first reaches the cutoff (or None), next tail."""
        # Only runs of length >= 2 matter, i.e. positions where a sample equals its
        # predecessor; for a healthy source they are rare (1 in 256), so after one vectorised
        # comparison the work is on a short index array. A run of C equal samples is C - 1
        # consecutive "equal to predecessor" positions. The carried tail (the last C - 1
        # samples) describes the unfinished run of the previous batches exactly, since any run
        # reaching C would already have failed.
        need = self.rct_cutoff - 1  # >= 1: the cutoff is at least 2
        tail = self._rct_tail
        y = np.concatenate((tail, x)) if tail.size else x
        next_tail = y[-need:].copy()
        eq = (y[1:] == y[:-1]).nonzero()[0]
        if eq.size < need:
            return None, next_tail
        # eq[j] = i means y[i + 1] == y[i]; C - 1 consecutive such i end a run of C samples.
        hits = (eq[need - 1 :] - eq[: eq.size - need + 1] == need - 1).nonzero()[0]
        if hits.size == 0:
            return None, next_tail
        # The run starts at y[eq[j]]; its C-th sample is y[eq[j] + need].
        return int(eq[hits[0]]) + need - tail.size, next_tail

    def _apt_scan(self, x: _U8) -> tuple[int | None, tuple[int, int, int]]:
        """Return the batch offset where a window first reaches the cutoff (or None), next state.

        The state is (first sample, its count so far, samples seen) of the unfinished window.
        """
        w, cutoff = APT_WINDOW, self.apt_cutoff
        ref, count, fill = self._apt_ref, self._apt_count, self._apt_fill
        pos = 0
        if fill:  # finish the window carried over from the previous batch
            head = x[: w - fill]
            count += int(np.count_nonzero(head == ref))
            if count >= cutoff:
                matches = (head == ref).nonzero()[0]
                return int(matches[cutoff - (count - matches.size) - 1]), (0, 0, 0)
            pos = head.size
            fill = (fill + pos) % w
        full = (x.size - pos) // w
        if full:
            windows = x[pos : pos + full * w].reshape(full, w)
            eq = windows == windows[:, :1]
            bad = (eq.sum(axis=1) >= cutoff).nonzero()[0]
            if bad.size:
                row = int(bad[0])
                col = int(eq[row].nonzero()[0][cutoff - 1])
                return pos + row * w + col, (0, 0, 0)
            pos += full * w
        if pos < x.size:  # a new window starts here; it may already reach the cutoff
            rest = x[pos:]
            ref = int(rest[0])
            count = int(np.count_nonzero(rest == ref))
            if count >= cutoff:
                return pos + int((rest == ref).nonzero()[0][cutoff - 1]), (0, 0, 0)
            fill = rest.size
        return None, (ref, count, fill)
