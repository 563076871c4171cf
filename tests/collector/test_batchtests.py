"""The batch tests: each catches its fault in one batch, none fires on healthy bytes (P5)."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from qrng_dd.collector.batchtests import (
    MIN_BATCH_BYTES,
    BatchTest,
    BatchTester,
    RepeatMemory,
    chi2_cutoff,
    chi2_sf,
    z_cutoff,
)


def _biased(rng: np.random.Generator, n: int, bias: float) -> bytes:
    """Bytes whose bits are 1 with P = 0.5 + bias / 2, as the simulator's ``--bias`` makes."""
    mask = np.packbits(rng.random((n, 8)) < bias, axis=1).ravel()
    return (rng.integers(0, 256, n, dtype=np.uint8) | mask).tobytes()


def test_the_chi_square_tail_matches_published_critical_values() -> None:
    """Q(df/2, x/2) at tabulated 1 % points, a closed form, and the far tail stays positive."""
    assert chi2_sf(310.457, 255) == pytest.approx(0.01, rel=1e-4)
    assert chi2_sf(30.578, 15) == pytest.approx(0.01, rel=1e-4)
    assert chi2_sf(7.0, 2) == pytest.approx(math.exp(-3.5), rel=1e-12)  # df 2: e^(-x/2)
    assert chi2_sf(5.0, 15) == pytest.approx(0.99212, rel=1e-4)  # below the mean: the series
    assert chi2_sf(0.0, 15) == 1.0
    assert 0.0 < chi2_sf(600.0, 255) < 1e-20


def test_cutoffs_solve_their_tails() -> None:
    """The cutoffs are where the tail equals alpha: 1.96 at 5 %, and chi-square both ways."""
    assert z_cutoff(0.05) == pytest.approx(1.959964, rel=1e-6)
    for df, alpha in ((15, 2.0**-42), (255, 2.0**-42), (255, 0.01)):
        assert chi2_sf(chi2_cutoff(df, alpha), df) == pytest.approx(alpha, rel=1e-6)


def test_a_smaller_alpha_gives_more_tolerant_cutoffs() -> None:
    """2^-40 per batch (the default) is wider than 2^-20 on every statistic."""
    strict, loose = BatchTester(20), BatchTester(40)
    assert strict.z < loose.z
    assert strict.poker < loose.poker
    assert strict.bytes < loose.bytes
    with pytest.raises(ValueError, match="at least 1"):
        BatchTester(0)


@pytest.mark.parametrize("bias", [0.1, 0.2, 0.3, 0.5])
def test_bias_is_caught_in_the_smallest_batch(bias: float) -> None:
    """From P(1) = 0.55 up, one 20,000-bit batch fails monobit at the default alpha."""
    rng = np.random.default_rng(int(bias * 10))
    assert BatchTester(40).check(_biased(rng, MIN_BATCH_BYTES, bias)) is BatchTest.MONOBIT


def test_a_balanced_stuck_byte_is_caught() -> None:
    """0xA5 forever has as many ones as zeros: the distribution tests catch it."""
    assert BatchTester(40).check(b"\xa5" * 4096) is BatchTest.POKER


def test_alternating_bits_are_caught_by_the_runs_test() -> None:
    """0x55 and 0xAA in random order: balanced, every nibble value but two missing ... and
    also far too many runs; with the values spread evenly the runs test is what fires."""
    rng = np.random.default_rng(7)
    # Bytes whose bits alternate inside each byte but look uniform otherwise: bit pairs
    # (01 or 10) at random, so ones and nibble values are balanced over many bytes.
    pairs = rng.integers(0, 2, (4096, 4))
    bits = np.stack([pairs, 1 - pairs], axis=2).reshape(4096, 8).astype(np.uint8)
    data = np.packbits(bits, axis=1).ravel().tobytes()
    assert BatchTester(40).check(data) in {BatchTest.RUNS, BatchTest.POKER, BatchTest.BYTES}
    sticky = np.repeat(rng.integers(0, 2, 4 * 4096), 2).astype(np.uint8)
    assert BatchTester(40).check(np.packbits(sticky).tobytes()) is not None


def test_a_replayed_stretch_is_caught_wherever_it_lands() -> None:
    """2 KiB of an earlier batch inside a fresh one, at an offset of its own: a repeat."""
    rng = np.random.default_rng(11)
    tester = BatchTester(40)
    first = rng.bytes(4096)
    assert tester.check(first) is None
    replay = rng.bytes(1234) + first[1000:3048] + rng.bytes(1000)
    assert tester.check(replay) is BatchTest.REPEAT
    # Inside one batch too.
    fresh = rng.bytes(3072)
    assert BatchTester(40).check(fresh + fresh[:1024]) is BatchTest.REPEAT


def test_the_repeat_memory_is_bounded() -> None:
    """Old fingerprints are forgotten once the memory is full; it never holds more."""
    rng = np.random.default_rng(12)
    tester = BatchTester(40, memory=64)
    first = rng.bytes(4096)
    assert tester.check(first) is None
    for _ in range(20):
        assert tester.check(rng.bytes(4096)) is None
        assert len(tester._seen) <= 64
    assert tester.check(first) is None  # long forgotten: no longer a known stretch


def test_the_repeat_memory_is_allocated_once_and_never_grows() -> None:
    """Filling the repeat memory allocates nothing that stays: its size is fixed when the
    tester is made. Kept as a set of ints, it grew by ~80 bytes per fingerprint until full,
    ~20 MB over the soak's first seven minutes, which the soak read as the collector leaking
    225 MB an hour."""
    rng = np.random.default_rng(14)
    batches = [rng.bytes(65536) for _ in range(256)]  # about 65,000 fingerprints
    BatchTester(40, memory=64).check(rng.bytes(65536))  # numpy's lazy imports, once
    tracemalloc.start()
    try:
        tester = BatchTester(40)
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches:
            assert tester.check(batch) is None
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert tester.check(batches[0]) is BatchTest.REPEAT  # they were remembered all the same
    assert grown < 64 * 1024, f"the repeat memory grew by {grown} bytes"


def test_the_repeat_memory_keeps_the_newest_and_forgets_a_segment_at_a_time() -> None:
    """Fed batches of any size, it remembers the last ``capacity`` fingerprints less at most
    one segment, and forgets in batch order: every batch older than one that lost a
    fingerprint is gone, every newer one whole (a batch across a segment's end may split)."""
    rng = np.random.default_rng(15)
    memory = RepeatMemory(64, segments=8)
    size = memory.nbytes
    values = rng.choice(np.iinfo(np.int64).max, 500, replace=False) * rng.choice([-1, 1], 500)
    batch_of = np.empty(values.size, dtype=np.int64)
    added = 0
    for batch in range(values.size):
        n = min(int(rng.integers(1, 20)), values.size - added)
        if not n:
            break
        memory.add(np.sort(values[added : added + n]))
        batch_of[added : added + n] = batch
        added += n
        kept = memory.seen(values)
        assert not kept[added:].any()
        assert int(kept.sum()) == len(memory)
        assert min(added, 64 - 8) <= len(memory) <= 64
        forgotten = batch_of[:added][~kept[:added]]
        if forgotten.size:
            assert batch_of[:added][kept[:added]].min() >= forgotten.max()
    assert memory.nbytes == size
    assert not memory.seen(np.array([0, 1, -1], dtype=np.int64)).any()


def test_a_batch_below_the_minimum_is_refused() -> None:
    """The tests have no power on a few bytes; the configuration keeps fetches above it."""
    with pytest.raises(ValueError, match="at least 2500"):
        BatchTester(40).check(bytes(100))


def test_64_mib_of_healthy_bytes_raise_no_alarm_at_the_default_alpha() -> None:
    """4,096 batches of 16 KiB from a good generator pass every test (bench: 1 GiB)."""
    rng = np.random.default_rng(2026)
    tester = BatchTester(40)
    failures = [tester.check(rng.bytes(16384)) for _ in range(4096)]
    assert failures.count(None) == len(failures)
