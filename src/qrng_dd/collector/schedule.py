"""Which source is fetched when, and what becomes of each batch. Pure; the clock is injected.

Theory of operation (DESIGN §6):

- **Fetch.** Every round, each source that is neither backing off nor in a quarantine
  cool-down is due (:meth:`Schedule.due`); the caller fetches those in parallel. A failing
  source backs off exponentially with full jitter (:func:`backoff_delay`); the others go on.
- **Test, then hold.** Every batch goes through its source's SP 800-90B health monitor and
  the batch tests (bias, nibble and byte distribution, runs, repeats:
  :mod:`qrng_dd.collector.batchtests`) before anything else. A passing batch is held back
  until the source's *next* batch passes too, so a fault that starts inside a batch, too small
  a part of it to be seen there, still costs that batch. A failure discards the batch and the
  one held, and quarantines the source (P5): no byte of a source caught faulty reaches the
  output. The price is one batch of latency per source, and the last batch before a stop is
  never used.
- **Mix.** The released batches are mixed (``xor`` or ``hkdf``) only if at least
  ``QRNG_MIN_SOURCES`` of them are healthy; otherwise nothing is output and
  :attr:`Schedule.paused_reason` says why. A round in which enough sources passed but their
  first batches are still held is not a pause: it only waits.

Nothing here logs or counts metrics: :meth:`Schedule.settle` returns a :class:`Round` that
says what happened, and the service reports it.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qrng_dd.collector.batchtests import BatchTester
from qrng_dd.collector.health import HealthMonitor, SourceState
from qrng_dd.collector.mixing import Mixing, mix

if TYPE_CHECKING:
    from qrng_dd.collector.sources.base import Source

#: Push retries start at 50 ms; fetch retries start at the fetch interval instead.
BACKOFF_MIN_S = 0.05
#: No retry waits longer than this, however long the outage: recovery stays prompt.
BACKOFF_MAX_S = 10.0


def backoff_delay(
    attempt: int,
    base: float = BACKOFF_MIN_S,
    cap: float = BACKOFF_MAX_S,
    *,
    jitter: Callable[[float, float], float] = random.uniform,
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)].

    Full jitter spreads the retries of many collectors that failed together.
    """
    return jitter(0, min(cap, base * 2 ** min(attempt, 30)))


@dataclass(slots=True, eq=False)
class SourceSlot:
    """One configured source and everything the collector tracks about it."""

    source: Source
    monitor: HealthMonitor
    batch_tests: BatchTester
    #: The last batch that passed, waiting for the next one to pass too.
    held: bytes | None = None
    fetched_bytes: int = 0
    #: Bytes of this source that went into the output, and that were thrown away by a test.
    mixed_bytes: int = 0
    discarded_bytes: int = 0
    fetch_errors: int = 0
    errors_in_row: int = 0
    retry_at: float = 0.0
    last_error: str | None = None

    @property
    def name(self) -> str:
        return self.source.name

    def check(self, data: bytes, now: float) -> Verdict:
        """Test ``data``, this source's next batch: hold it if it passes, release the one before.

        A failure (health or batch test) quarantines the source and discards ``data`` together
        with the batch held, which nothing has vouched for yet.
        """
        before = self.monitor.state
        verdict = self.monitor.check(data, now)
        failed = verdict.failed_test.value if verdict.failed_test is not None else None
        if failed is None and verdict.state is not SourceState.QUARANTINED:
            batch_failure = self.batch_tests.check(data)
            if batch_failure is not None:
                self.monitor.refuse(now)
                failed = batch_failure.value
        if failed is not None:
            discarded = len(data) + len(self.held or b"")
            self.held = None
            self.discarded_bytes += discarded
            return Verdict(
                passed=False,
                failed_test=failed,
                failure_offset=verdict.failure_offset,
                discarded=discarded,
                cooldown_s=self.monitor.cooldown_remaining(now),
            )
        new_state = verdict.state if verdict.state is not before else None
        if not verdict.ok:
            return Verdict(passed=False, new_state=new_state)
        released, self.held = self.held, data
        return Verdict(passed=True, released=released, new_state=new_state)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the tests made of one batch."""

    passed: bool
    #: The batch this one released (the one held before it), to be mixed.
    released: bytes | None = None
    #: The test that failed ("rct", "apt" or a batch test), and where in the batch.
    failed_test: str | None = None
    failure_offset: int | None = None
    #: Bytes thrown away because of the failure: this batch and the one held.
    discarded: int = 0
    cooldown_s: float = 0.0
    #: The source's new state, when it changed without a failure (e.g. start-up passed).
    new_state: SourceState | None = None


class OutputState(enum.Enum):
    """What one round did with the output."""

    FLOWING = "flowing"
    #: Too few healthy sources: nothing is output, and ``paused_reason`` says why.
    PAUSED = "paused"
    #: Enough sources passed, but their first batches are still held: nothing yet.
    HELD = "held"


@dataclass(frozen=True, slots=True)
class Round:
    """The result of one fetch round."""

    output: bytes
    state: OutputState
    #: PAUSED: the reason differs from the last round's; FLOWING: the output resumed.
    changed: bool = False
    verdicts: list[tuple[SourceSlot, Verdict]] = field(default_factory=list)


class Schedule:
    """The sources' fetch schedule, health gate and mixing, on an injected monotonic clock."""

    def __init__(
        self,
        slots: list[SourceSlot],
        *,
        min_sources: int,
        mixing: Mixing,
        retry_base_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            slots: the sources, in configuration order.
            min_sources: ``QRNG_MIN_SOURCES``.
            mixing: ``QRNG_MIXING``.
            retry_base_s: the first fetch retry's backoff envelope (the fetch interval).
            clock: monotonic seconds.
        """
        self.slots = slots
        self.min_sources = min_sources
        self.mixing: Mixing = mixing
        self._retry_base_s = retry_base_s
        self._clock = clock
        #: Sources whose batches went into the last output.
        self.contributing = 0
        self.paused_reason: str | None = "starting"

    def due(self) -> list[SourceSlot]:
        """The sources to fetch now: not backing off, and not cooling down in quarantine."""
        now = self._clock()
        return [slot for slot in self.slots if _eligible(slot, now)]

    def fetch_failed(self, slot: SourceSlot, detail: str) -> bool:
        """Record a failed fetch and back ``slot`` off.

        Returns:
            Whether it is news worth a log line: the first failure in a row, or a new error.
        """
        slot.fetch_errors += 1
        slot.errors_in_row += 1
        slot.retry_at = self._clock() + backoff_delay(slot.errors_in_row, base=self._retry_base_s)
        news = slot.last_error != detail or slot.errors_in_row == 1
        slot.last_error = detail
        return news

    def fetched(self, slot: SourceSlot, data: bytes) -> bool:
        """Record a successful fetch. Returns: whether the source just recovered."""
        recovered = slot.errors_in_row > 0
        slot.errors_in_row = 0
        slot.last_error = None
        slot.fetched_bytes += len(data)
        return recovered

    def settle(self, fetched: Mapping[SourceSlot, bytes]) -> Round:
        """Test this round's batches, release the held ones that passed, and mix them."""
        now = self._clock()
        verdicts: list[tuple[SourceSlot, Verdict]] = []
        healthy: list[tuple[SourceSlot, bytes]] = []
        passed = 0
        for slot in self.slots:
            data = fetched.get(slot)
            if data is not None:
                verdict = slot.check(data, now)
                verdicts.append((slot, verdict))
                passed += verdict.passed
                if verdict.released is not None:
                    healthy.append((slot, verdict.released))
        self.contributing = len(healthy)
        if len(healthy) < self.min_sources <= passed:
            return Round(b"", OutputState.HELD, verdicts=verdicts)
        if len(healthy) < self.min_sources:
            reason = (
                f"{len(healthy)} of {len(self.slots)} sources healthy, "
                f"QRNG_MIN_SOURCES={self.min_sources}"
            )
            changed = reason != self.paused_reason
            self.paused_reason = reason
            return Round(b"", OutputState.PAUSED, changed, verdicts)
        resumed = self.paused_reason is not None
        self.paused_reason = None
        output = mix([data for _, data in healthy], self.mixing)
        for slot, _ in healthy:
            slot.mixed_bytes += len(output)
        return Round(output, OutputState.FLOWING, resumed, verdicts)


def _eligible(slot: SourceSlot, now: float) -> bool:
    if now < slot.retry_at:
        return False
    quarantined = slot.monitor.state is SourceState.QUARANTINED
    return not quarantined or slot.monitor.ready_to_retry(now)
