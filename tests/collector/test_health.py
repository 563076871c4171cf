"""Tests for the SP 800-90B continuous health tests and the quarantine policy."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from qrng_dd.collector.health import (
    APT_WINDOW,
    STARTUP_SAMPLES,
    HealthMonitor,
    HealthResult,
    HealthTest,
    SourceState,
    apt_cutoff,
    rct_cutoff,
)
from qrng_dd.collector.quarantine import Quarantine


def _good(n: int, seed: int = 1) -> bytes:
    """Uniform bytes from a seeded generator (deterministic, no run near the cutoffs)."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _healthy_monitor() -> HealthMonitor:
    """A monitor that has passed start-up on good data ending in byte 0x00."""
    monitor = HealthMonitor()
    data = bytearray(_good(4 * APT_WINDOW))
    data[-1] = 0
    assert monitor.check(bytes(data), now=0.0).ok
    return monitor


def _reference_first_failure(stream: list[int], rct_c: int, apt_c: int) -> tuple[int, str] | None:
    """SP 800-90B §4.4.1 / §4.4.2 sample by sample, as written in the spec."""
    found: list[tuple[int, str]] = []
    last, run = -1, 0
    for i, value in enumerate(stream):
        run = run + 1 if value == last else 1
        last = value
        if run >= rct_c:
            found.append((i, "rct"))
            break
    ref, count = -1, 0
    for i, value in enumerate(stream):
        if i % APT_WINDOW == 0:
            ref, count = value, 1
        elif value == ref:
            count += 1
        if count >= apt_c:
            found.append((i, "apt"))
            break
    return min(found) if found else None


def test_cutoffs_match_the_sp800_90b_tables_at_alpha_2_to_minus_20() -> None:
    """H = 8 gives RCT 4 and APT 13; H = 7 gives 4 and 18; the §4.4.2 table values hold."""
    assert rct_cutoff(8.0, alpha_log2=20) == 4
    assert apt_cutoff(8.0, alpha_log2=20) == 13
    assert rct_cutoff(7.0, alpha_log2=20) == 4
    assert apt_cutoff(7.0, alpha_log2=20) == 18
    for h, expected in ((0.5, 410), (1.0, 311), (2.0, 177), (4.0, 62)):
        assert apt_cutoff(h, APT_WINDOW, 20) == expected


def test_default_cutoffs_use_alpha_2_to_minus_40() -> None:
    """The monitor's default alpha 2^-40 gives RCT 7 / APT 26 at H = 7 and 6 / 19 at H = 8."""
    assert (rct_cutoff(7.0), apt_cutoff(7.0)) == (7, 26)
    assert (rct_cutoff(8.0), apt_cutoff(8.0)) == (6, 19)
    monitor = HealthMonitor()
    assert (monitor.rct_cutoff, monitor.apt_cutoff) == (7, 26)
    assert HealthMonitor(8.0, alpha_log2=20).apt_cutoff == 13


def test_apt_cutoff_is_the_binomial_critical_value() -> None:
    """P(Binomial(W, 2^-H) >= cutoff) <= alpha < P(Binomial(W, 2^-H) >= cutoff - 1)."""
    for h in (1.0, 3.5, 7.0, 8.0):
        for alpha_log2 in (20, 40):
            c, p = apt_cutoff(h, alpha_log2=alpha_log2), 2.0**-h

            def tail(k: int, p: float = p) -> float:
                return math.fsum(
                    math.comb(APT_WINDOW, j) * p**j * (1 - p) ** (APT_WINDOW - j)
                    for j in range(k, APT_WINDOW + 1)
                )

            assert tail(c) <= 2.0**-alpha_log2 < tail(c - 1)


def test_invalid_parameters_are_refused() -> None:
    """Entropy outside (0, 8], alpha_log2 < 1 and tiny windows raise ValueError."""
    for h in (0.0, -1.0, 8.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="min-entropy"):
            rct_cutoff(h)
    with pytest.raises(ValueError, match="alpha_log2"):
        apt_cutoff(7.0, alpha_log2=0)
    with pytest.raises(ValueError, match="window"):
        apt_cutoff(7.0, window=1)
    with pytest.raises(ValueError, match="cool-downs"):
        Quarantine(base_s=10.0, max_s=5.0)


def test_stuck_output_is_caught_by_rct_within_cutoff_samples() -> None:
    """A source stuck on one value fails the RCT at its C-th sample."""
    monitor = _healthy_monitor()
    result = monitor.check(b"\x42" * 100, now=1.0)
    assert result == HealthResult(
        ok=False,
        state=SourceState.QUARANTINED,
        failed_test=HealthTest.RCT,
        failure_offset=monitor.rct_cutoff - 1,
        samples_tested=monitor.rct_cutoff,
    )
    assert monitor.state is SourceState.QUARANTINED
    assert monitor.failures == 1


def test_stuck_source_fails_the_startup_test() -> None:
    """All-zero output from a fresh source is quarantined during start-up."""
    monitor = HealthMonitor()
    result = monitor.check(bytes(STARTUP_SAMPLES))
    assert not result.ok
    assert result.failed_test is HealthTest.RCT
    assert result.failure_offset == monitor.rct_cutoff - 1
    assert monitor.state is SourceState.QUARANTINED


def test_biased_stream_is_caught_by_apt_within_a_few_windows() -> None:
    """One value at 10% (vs 2^-7 claimed) trips the APT, not the RCT, within a few windows."""
    rng = np.random.default_rng(20)
    n = 64 * APT_WINDOW
    data = rng.integers(0, 256, n, dtype=np.uint8)
    data[rng.random(n) < 0.1] = 0x55
    monitor = _healthy_monitor()
    result = monitor.check(data.tobytes(), now=1.0)
    assert result.failed_test is HealthTest.APT
    assert result.failure_offset is not None
    assert result.failure_offset < 32 * APT_WINDOW
    window = data[result.failure_offset // APT_WINDOW * APT_WINDOW :][:APT_WINDOW]
    assert np.count_nonzero(window == window[0]) >= monitor.apt_cutoff


def test_urandom_passes_4_mb_in_64_kib_batches_without_alarm() -> None:
    """Good bytes never alarm: at alpha 2^-40 a chance RCT alarm needs ~2^48 bytes."""
    # RCT: P(7 equal bytes) = 256^-6 = 2^-48 per position, so 4 MB alarms with p ~ 1.5e-8; the
    # APT (26 of 512 where ~3 are expected) is rarer still. At alpha 2^-20 (cutoff 4) the same
    # 4 MB would alarm with p ~ 0.22: the reason for the default.
    monitor = HealthMonitor()
    for i in range(64):
        result = monitor.check(os.urandom(64 * 1024), now=float(i))
        assert result.failed_test is None
        assert result.ok
    assert monitor.state is SourceState.HEALTHY
    assert monitor.samples_total == 4 * 1024 * 1024
    assert monitor.failures == 0


def test_run_split_across_batches_is_detected() -> None:
    """Three equal bytes closing one batch and four opening the next make a run of seven."""
    monitor = _healthy_monitor()
    assert monitor.check(b"\x01\x02\x42\x42\x42", now=1.0).ok
    result = monitor.check(b"\x42" * 4 + b"\x07" * 2, now=1.0)
    assert result.failed_test is HealthTest.RCT
    assert result.failure_offset == monitor.rct_cutoff - 1 - 3


def test_run_carried_through_many_tiny_batches_is_detected() -> None:
    """A run delivered one byte per batch still fails at its C-th sample."""
    monitor = _healthy_monitor()
    results = [monitor.check(b"\x42", now=1.0) for _ in range(monitor.rct_cutoff)]
    assert all(r.ok for r in results[:-1])
    assert results[-1].failed_test is HealthTest.RCT
    assert results[-1].failure_offset == 0


def test_apt_window_split_across_batches_is_counted_whole() -> None:
    """An APT window spread over two batches fails at the same sample as in one batch."""
    rng = np.random.default_rng(5)
    window = rng.integers(1, 256, APT_WINDOW, dtype=np.uint8)
    window[::19] = 0  # 27 zeros, never adjacent: no run, but 27 >= 26 in one window
    stream = _good(2 * APT_WINDOW) + window.tobytes()
    whole = HealthMonitor().check(stream)
    assert whole.failed_test is HealthTest.APT
    assert whole.failure_offset == 2 * APT_WINDOW + 25 * 19  # the 26th zero
    for cut in (2 * APT_WINDOW + 1, 2 * APT_WINDOW + 300, whole.failure_offset):
        monitor = HealthMonitor()
        first = monitor.check(stream[:cut])
        assert first.failed_test is None
        second = monitor.check(stream[cut:])
        assert second.failed_test is HealthTest.APT
        assert second.failure_offset is not None
        assert whole.failure_offset == cut + second.failure_offset


def test_vectorised_tests_match_the_sample_by_sample_reference() -> None:
    """Random low-entropy streams cut at random points alarm exactly where the spec says."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        h = float(rng.choice([8.0, 7.0, 4.0, 2.0]))
        alpha_log2 = int(rng.choice([5, 20, 40]))
        alphabet = int(rng.integers(2, 40))
        n = int(rng.integers(1, 4000))
        p = rng.dirichlet(np.ones(alphabet) * rng.uniform(0.2, 5.0))
        stream = rng.choice(alphabet, size=n, p=p).astype(np.uint8)
        monitor = HealthMonitor(h, alpha_log2=alpha_log2)
        expected = _reference_first_failure(stream.tolist(), monitor.rct_cutoff, monitor.apt_cutoff)
        cuts = sorted(set(rng.integers(0, n, size=int(rng.integers(0, 8))).tolist()))
        got, base = None, 0
        for piece in np.split(stream, cuts):
            result = monitor.check(piece.tobytes())
            if result.failed_test is not None:
                assert result.failure_offset is not None
                got = (base + result.failure_offset, str(result.failed_test))
                break
            base += piece.size
        assert got == expected


def test_startup_needs_1024_good_samples_before_healthy() -> None:
    """Batches before 1,024 samples are held back; the batch completing start-up is released."""
    monitor = HealthMonitor()
    assert monitor.state is SourceState.STARTUP
    data = _good(STARTUP_SAMPLES + 10)
    first = monitor.check(data[:1000])
    assert first == HealthResult(ok=False, state=SourceState.STARTUP, samples_tested=1000)
    second = monitor.check(data[1000:])
    assert second.ok
    assert second.state is SourceState.HEALTHY
    assert monitor.check(b"").ok
    monitor.reset()
    assert monitor.state is SourceState.STARTUP
    assert not monitor.check(data[:512]).ok


def test_quarantine_escalates_and_retries_on_an_injected_clock() -> None:
    """Cool-downs double per failure up to 300 s; a retry runs a fresh start-up test."""
    monitor = _healthy_monitor()
    stuck = bytes(64)
    now = 10.0
    for expected in (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0):
        assert monitor.check(stuck, now=now).failed_test is HealthTest.RCT
        assert monitor.cooldown_remaining(now) == expected
        assert not monitor.ready_to_retry(now + expected - 0.5)
        refused = monitor.check(_good(4096), now=now + expected - 0.5)
        assert refused == HealthResult(ok=False, state=SourceState.QUARANTINED)
        now += expected
        assert monitor.ready_to_retry(now)
        assert monitor.cooldown_remaining(now) == 0.0
        retried = monitor.check(_good(4096, seed=int(now)), now=now)
        assert retried.ok
        assert monitor.state is SourceState.HEALTHY
        now += 1.0
    assert monitor.failures == 8


def test_long_healthy_period_resets_the_escalation() -> None:
    """After an hour of health the next failure starts again from the base cool-down."""
    monitor = _healthy_monitor()
    for now in (10.0, 300.0):
        monitor.check(bytes(64), now=now)
        assert monitor.check(_good(4096, seed=int(now)), now=now + 100.0).ok
    assert monitor.quarantine.level == 2
    monitor.check(bytes(64), now=440.0)
    assert monitor.cooldown_remaining(440.0) == 20.0
    assert monitor.check(_good(4096), now=500.0).ok  # healthy again from t = 500
    monitor.check(bytes(64), now=500.0 + 3600.0)
    assert monitor.cooldown_remaining(4100.0) == 5.0
    assert monitor.quarantine.level == 1
    assert monitor.failures == 4


def test_failure_without_a_clock_is_stamped_at_the_next_time_seen() -> None:
    """check(batch) without now starts the cool-down at the first time the monitor is given."""
    monitor = HealthMonitor()
    assert monitor.check(bytes(100)).state is SourceState.QUARANTINED
    assert monitor.check(_good(4096)) == HealthResult(ok=False, state=SourceState.QUARANTINED)
    assert monitor.cooldown_remaining(100.0) == 5.0
    assert not monitor.ready_to_retry(104.0)
    assert monitor.ready_to_retry(105.0)


def test_reset_lifts_quarantine_and_keeps_the_history() -> None:
    """An operator reset restarts the start-up test but remembers the failure count."""
    monitor = HealthMonitor()
    monitor.check(bytes(100), now=0.0)
    monitor.reset()
    assert monitor.state is SourceState.STARTUP
    assert monitor.cooldown_remaining(1.0) == 0.0
    assert monitor.check(_good(2048), now=1.0).ok
    assert monitor.failures == 1


def test_states_are_json_friendly_strings() -> None:
    """SourceState and HealthTest values are the strings status and metrics show."""
    assert [s.value for s in SourceState] == ["healthy", "startup", "quarantined"]
    assert f"{HealthTest.RCT}/{HealthTest.APT}" == "rct/apt"
