"""Tests for the simulator's faults (`qrng_dd.simulator.faults`): checks, bytes, drift, bit rate."""

from __future__ import annotations

import pytest

from qrng_dd.simulator import faults as sim_faults
from qrng_dd.simulator.faults import BitrateCap, Faults, check_fault, effective_bias, generate_bytes


class _FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("stuck", 1, "stuck must be true or false"),
        ("bias", True, "bias must be a number"),
        ("repeat", "0.5", "repeat must be a number"),
        ("bias", 10**400, "bias must be between 0 and 1"),
        ("latency_ms", 1.5, "latency_ms must be a whole number"),
        ("max_bitrate", -8, "max_bitrate must be at least 0"),
    ],
)
def test_check_fault_refuses_values_of_the_wrong_kind(
    name: str, value: object, message: str
) -> None:
    """A boolean is no number, a number no boolean, and an overflowing integer is out of range."""
    with pytest.raises(ValueError, match=message):
        check_fault(name, value)


def test_check_fault_returns_each_field_as_its_type() -> None:
    """Whole floats become integers for integer fields; numbers become floats for fractions."""
    assert check_fault("max_bitrate", 8e6) == 8_000_000
    assert isinstance(check_fault("max_bitrate", 8e6), int)
    assert check_fault("bias", 1) == 1.0
    assert isinstance(check_fault("bias", 1), float)
    assert check_fault("stuck", True) is True


def test_generate_bytes_keeps_exact_length_across_bias_chunks() -> None:
    """Biased output has exactly n bytes, also past one chunk; bias=1 is all ones."""
    n = sim_faults._BIAS_CHUNK + 3
    assert len(generate_bytes(n, Faults(bias=0.2))) == n
    assert generate_bytes(0, Faults(bias=0.2)) == b""
    assert generate_bytes(16, Faults(bias=1.0)) == b"\xff" * 16


def test_effective_bias_grows_per_mebibyte_served_up_to_one() -> None:
    """The drifted bias is bias + drift per MiB served, capped at 1; no drift, no change."""
    mib = 1024 * 1024
    assert effective_bias(0.1, 0.0, 50 * mib) == 0.1
    assert effective_bias(0.1, 0.2, 0) == 0.1
    assert effective_bias(0.1, 0.2, mib // 2) == pytest.approx(0.2)
    assert effective_bias(0.0, 0.25, 3 * mib) == pytest.approx(0.75)
    assert effective_bias(0.5, 1.0, 10 * mib) == 1.0
    assert effective_bias(0.0, 1e308, 10 * mib) == 1.0


def test_bitrate_cap_without_a_cap_never_waits() -> None:
    """Rate 0 means no cap: any request is served at once."""
    cap = BitrateCap(clock=_FakeClock())
    assert cap.reserve(10**12, 0) == 0.0


def test_bitrate_cap_serves_a_burst_then_makes_requests_wait() -> None:
    """A fresh cap holds 100 ms of bits; beyond that each request waits for its own bits."""
    clock = _FakeClock()
    cap = BitrateCap(clock=clock)
    rate = 4_000_000
    assert cap.reserve(400_000, rate) == 0.0
    assert cap.reserve(400_000, rate) == pytest.approx(0.1)
    # A second request queued behind the first waits for both.
    assert cap.reserve(400_000, rate) == pytest.approx(0.2)


def test_bitrate_cap_refills_with_time_up_to_its_burst() -> None:
    """Idle time pays back the debt and refills, but never beyond 100 ms of bits."""
    clock = _FakeClock()
    cap = BitrateCap(clock=clock)
    rate = 16_000_000
    cap.reserve(1_600_000 + 800_000, rate)  # 50 ms in debt
    clock.now += 0.05
    assert cap.reserve(0, rate) == pytest.approx(0.0, abs=1e-9)
    clock.now += 3600
    assert cap.reserve(1_600_000, rate) == 0.0
    assert cap.reserve(1_600_000, rate) == pytest.approx(0.1)


def test_bitrate_cap_follows_a_rate_change() -> None:
    """A new rate applies to the next request; turning the cap off and on starts full."""
    clock = _FakeClock()
    cap = BitrateCap(clock=clock)
    assert cap.reserve(1_000, 1_000) == pytest.approx(0.9)
    assert cap.reserve(1_000, 2_000) == pytest.approx(0.95)
    assert cap.reserve(1_000, 0) == 0.0
    assert cap.reserve(100, 1_000) == 0.0


def test_bitrate_cap_ignores_a_clock_that_goes_backwards() -> None:
    """A clock step backwards refills nothing instead of draining the bucket."""
    clock = _FakeClock()
    cap = BitrateCap(clock=clock)
    cap.reserve(800, 8_000)
    clock.now -= 10
    assert cap.reserve(800, 8_000) == pytest.approx(0.1)
