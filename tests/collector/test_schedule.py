"""The fetch schedule on a fake clock: backoff, test-then-hold, quarantine, pause and mix."""

from __future__ import annotations

import numpy as np
import pytest

from qrng_dd.collector.batchtests import BatchTester
from qrng_dd.collector.health import HealthMonitor, SourceState
from qrng_dd.collector.mixing import mix
from qrng_dd.collector.quarantine import BASE_COOLDOWN_S
from qrng_dd.collector.schedule import (
    BACKOFF_MAX_S,
    OutputState,
    Schedule,
    SourceSlot,
    backoff_delay,
)
from tests.collector.fakes import FakeClock

SIZE = 4096
STUCK = b"\xa5" * SIZE


class NamedSource:
    """A source the schedule only names: the service does the fetching."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def fetch(self, n: int) -> bytes:
        raise NotImplementedError


def _batches(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.bytes(SIZE) for _ in range(6)]


def _schedule(names: str, clock: FakeClock, min_sources: int = 1) -> Schedule:
    slots = [SourceSlot(NamedSource(name), HealthMonitor(7.0), BatchTester(40)) for name in names]
    return Schedule(slots, min_sources=min_sources, mixing="xor", retry_base_s=0.1, clock=clock)


@pytest.mark.parametrize("attempt", range(40))
def test_backoff_is_full_jitter_under_a_doubling_envelope_and_a_cap(attempt: int) -> None:
    """The envelope is base * 2^attempt up to the cap; the delay is uniform below it."""
    envelope = min(5.0, 0.1 * 2**attempt)
    assert backoff_delay(attempt, 0.1, 5.0, jitter=lambda lo, hi: hi) == envelope
    assert backoff_delay(attempt, 0.1, 5.0, jitter=lambda lo, hi: lo) == 0.0
    assert 0.0 <= backoff_delay(attempt, 0.1, 5.0) <= envelope


def test_backoff_of_a_huge_attempt_count_is_the_cap() -> None:
    """Attempt counts far beyond any float exponent still give the cap, not an overflow."""
    assert backoff_delay(10**9, jitter=lambda lo, hi: hi) == BACKOFF_MAX_S


def test_a_failing_source_backs_off_and_the_others_stay_due() -> None:
    """After a failure the source is not due until its backoff has passed."""
    clock = FakeClock()
    schedule = _schedule("ab", clock)
    a, b = schedule.slots
    assert schedule.due() == [a, b]
    assert schedule.fetch_failed(a, "refused") is True
    assert schedule.due() == [b]
    assert 0 <= a.retry_at - clock.now <= 0.1 * 2
    clock.now = a.retry_at
    assert schedule.due() == [a, b]


def test_only_news_of_a_fetch_failure_is_worth_a_log_line() -> None:
    """The first failure and a changed error are news; the same error again is not."""
    schedule = _schedule("a", FakeClock())
    (a,) = schedule.slots
    assert [schedule.fetch_failed(a, e) for e in ("x", "x", "y", "y")] == [True, False, True, False]
    assert (a.fetch_errors, a.errors_in_row, a.last_error) == (4, 4, "y")
    assert schedule.fetched(a, b"12") is True
    assert schedule.fetched(a, b"34") is False
    assert (a.errors_in_row, a.last_error, a.fetched_bytes) == (0, None, 4)


def test_a_passing_batch_is_held_until_the_next_one_passes() -> None:
    """Round 1 only holds (not a pause); each later round releases the batch before it."""
    schedule = _schedule("a", FakeClock())
    (a,) = schedule.slots
    batches = _batches(1)
    first = schedule.settle({a: batches[0]})
    assert (first.output, first.state) == (b"", OutputState.HELD)
    assert first.verdicts[0][1].new_state is SourceState.HEALTHY
    assert schedule.paused_reason == "starting"
    second = schedule.settle({a: batches[1]})
    assert (second.output, second.state, second.changed) == (batches[0], OutputState.FLOWING, True)
    assert schedule.paused_reason is None
    third = schedule.settle({a: batches[2]})
    assert (third.output, third.changed) == (batches[1], False)
    assert (a.held, a.mixed_bytes) == (batches[2], 2 * SIZE)


def test_a_failure_discards_the_held_batch_and_quarantines_the_source() -> None:
    """A stuck batch costs itself and the one held; the source sits out its cool-down."""
    clock = FakeClock()
    schedule = _schedule("a", clock)
    (a,) = schedule.slots
    batches = _batches(2)
    schedule.settle({a: batches[0]})
    failed = schedule.settle({a: STUCK})
    (_, verdict) = failed.verdicts[0]
    assert failed.output == b""
    assert (verdict.passed, verdict.failed_test, verdict.discarded) == (False, "rct", 2 * SIZE)
    assert verdict.cooldown_s == BASE_COOLDOWN_S
    assert (a.held, a.discarded_bytes, a.mixed_bytes) == (None, 2 * SIZE, 0)
    assert a.monitor.state is SourceState.QUARANTINED
    assert schedule.due() == []
    clock.now += BASE_COOLDOWN_S
    assert schedule.due() == [a]
    retried = schedule.settle({a: batches[1]})
    assert retried.verdicts[0][1].new_state is SourceState.HEALTHY  # fresh start-up passed
    assert retried.output == b""  # held again: nothing vouches for it yet


def test_too_few_healthy_sources_pause_the_output_with_a_reason() -> None:
    """QRNG_MIN_SOURCES=2 with one source stuck: paused, each new reason reported once."""
    schedule = _schedule("ab", FakeClock(), min_sources=2)
    a, b = schedule.slots
    good = _batches(3)
    rounds = [schedule.settle({a: good[i], b: STUCK}) for i in range(3)]
    assert [r.state for r in rounds] == [OutputState.PAUSED] * 3
    # Round 1: a's batch is held (0 healthy); from round 2 on a releases one (1 healthy).
    assert [r.changed for r in rounds] == [True, True, False]
    assert schedule.paused_reason == "1 of 2 sources healthy, QRNG_MIN_SOURCES=2"
    assert all(r.output == b"" for r in rounds)


def test_healthy_sources_are_mixed_and_counted() -> None:
    """With two good sources the output is the XOR of the batches each one released."""
    schedule = _schedule("ab", FakeClock(), min_sources=2)
    a, b = schedule.slots
    batches_a, batches_b = _batches(4), _batches(5)
    assert schedule.settle({a: batches_a[0], b: batches_b[0]}).state is OutputState.HELD
    result = schedule.settle({a: batches_a[1], b: batches_b[1]})
    assert result.output == mix([batches_a[0], batches_b[0]], "xor")
    assert schedule.contributing == 2
    assert (a.mixed_bytes, b.mixed_bytes) == (SIZE, SIZE)


def test_a_source_not_fetched_this_round_neither_holds_nor_releases() -> None:
    """A round without a source's batch leaves its held batch where it is."""
    schedule = _schedule("ab", FakeClock())
    a, b = schedule.slots
    batches = _batches(6)
    schedule.settle({a: batches[0]})
    result = schedule.settle({b: batches[1]})
    assert result.output == b""
    assert [slot for slot, _ in result.verdicts] == [b]
    assert a.held == batches[0]
