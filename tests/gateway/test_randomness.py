"""Tests for the FIPS 140-2 / SP 800-22 / SP 800-90B self-test report."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pytest

from qrng_dd.gateway import randomness
from qrng_dd.gateway.randomness import (
    FIPS_BLOCK_BYTES,
    MIN_BYTES,
    RandomnessReport,
    fips_failures_allowed,
    randomness_report,
)
from qrng_dd.gateway.special import igamc


def _tests(report: RandomnessReport) -> dict[str, dict[str, Any]]:
    """The report's test entries by name."""
    return {entry["name"]: dict(entry) for entry in report["tests"]}


def _seeded(n: int, seed: int) -> bytes:
    """Uniform bytes from a seeded PCG64 generator."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_urandom_125000_bytes_passes_overall() -> None:
    """Good data passes: a chance 'fail' needs a p-value < 1e-6 or many failed FIPS blocks."""
    report = randomness_report(os.urandom(125_000))
    assert report["passed"] is True
    assert report["verdict"] in {"pass", "weak"}
    assert report["bytes_tested"] == 125_000
    tests = _tests(report)
    assert all(tests[f"fips140_2_{name}"]["passed"] for name in ("monobit", "poker", "long_run"))
    assert tests["fips140_2_runs"]["passed"]
    shannon, min_entropy = (
        report["shannon_entropy_bits_per_byte"],
        report["min_entropy_bits_per_byte"],
    )
    assert isinstance(shannon, float)
    assert isinstance(min_entropy, float)
    assert shannon > 7.99
    assert 7.5 < min_entropy < 8.0
    assert json.loads(json.dumps(report)) == report


def test_seeded_good_data_passes_every_test() -> None:
    """A fixed PCG64 stream gets the verdict 'pass' with every test passing."""
    report = randomness_report(_seeded(125_000, seed=2024))
    assert report["verdict"] == "pass"
    assert all(entry["passed"] for entry in _tests(report).values())
    assert set(_tests(report)) == {
        "fips140_2_monobit",
        "fips140_2_poker",
        "fips140_2_runs",
        "fips140_2_long_run",
        "sp800_22_frequency",
        "sp800_22_block_frequency",
        "sp800_22_runs",
        "serial_correlation",
    }


def test_biased_bits_fail_monobit_and_frequency() -> None:
    """Bits set with probability 0.6 fail FIPS monobit and SP 800-22 frequency."""
    rng = np.random.default_rng(6)
    data = np.packbits(rng.random(125_000 * 8) < 0.6).tobytes()
    report = randomness_report(data)
    tests = _tests(report)
    assert report["passed"] is False
    assert report["verdict"] == "fail"
    assert tests["fips140_2_monobit"]["passed"] is False
    assert tests["fips140_2_monobit"]["blocks_failed"] == 50
    assert tests["sp800_22_frequency"]["passed"] is False
    p_value = tests["sp800_22_frequency"]["p_value"]
    assert isinstance(p_value, float)
    assert p_value < 1e-6


def test_all_zero_data_fails_everything() -> None:
    """All-zero bytes fail every test and have zero entropy."""
    report = randomness_report(bytes(125_000))
    assert report["passed"] is False
    assert not any(entry["passed"] for entry in _tests(report).values())
    assert report["shannon_entropy_bits_per_byte"] == 0.0
    assert report["min_entropy_bits_per_byte"] == 0.0


def test_alternating_bits_fail_poker_runs_and_serial_correlation() -> None:
    """0x55 repeated has perfect balance but fails poker, runs and serial correlation."""
    tests = _tests(randomness_report(b"\x55" * 25_000))
    assert tests["fips140_2_monobit"]["passed"] is True
    assert tests["fips140_2_long_run"]["passed"] is True
    assert tests["fips140_2_poker"]["passed"] is False
    assert tests["fips140_2_runs"]["passed"] is False
    assert tests["sp800_22_runs"]["passed"] is False
    assert tests["serial_correlation"]["passed"] is False


def test_duplicated_bytes_fail_serial_correlation() -> None:
    """Every byte sent twice (r ~ 0.5) fails the lag-1 serial correlation test."""
    half = np.frombuffer(_seeded(62_500, seed=3), dtype=np.uint8)
    tests = _tests(randomness_report(np.repeat(half, 2).tobytes()))
    assert tests["serial_correlation"]["passed"] is False
    r = tests["serial_correlation"]["statistic"]
    assert isinstance(r, float)
    assert 0.45 < r < 0.55


def test_long_run_is_counted_per_block_and_not_across_blocks() -> None:
    """A 32-bit zero run inside a block fails it; 16 + 16 zero bits astride a boundary do not."""
    data = bytearray(_seeded(2 * FIPS_BLOCK_BYTES, seed=9))
    data[FIPS_BLOCK_BYTES - 3] |= 0x01  # bound the straddling run to exactly 16 + 16 bits
    data[FIPS_BLOCK_BYTES - 2 : FIPS_BLOCK_BYTES + 2] = bytes(4)
    data[FIPS_BLOCK_BYTES + 2] |= 0x80
    assert _tests(randomness_report(bytes(data)))["fips140_2_long_run"]["blocks_failed"] == 0
    data[100:104] = bytes(4)
    assert _tests(randomness_report(bytes(data)))["fips140_2_long_run"]["blocks_failed"] == 1
    single = _tests(randomness_report(bytes(data[:FIPS_BLOCK_BYTES])))["fips140_2_long_run"]
    assert single["blocks_failed"] == 1
    assert single["passed"] is False


def test_fips_counts_match_a_bit_by_bit_implementation() -> None:
    """The vectorised FIPS block counts equal a straightforward per-bit count."""
    rng = np.random.default_rng(12)
    data = np.packbits(rng.random(40 * FIPS_BLOCK_BYTES * 8) < 0.502)
    data[::251] = 0
    expected = [0, 0, 0, 0]
    lo, hi = [2343, 1135, 542, 251, 111, 111], [2657, 1365, 708, 373, 201, 201]
    for block in data.reshape(-1, FIPS_BLOCK_BYTES):
        bits = np.unpackbits(block).tolist()
        nibbles = [0] * 16
        for byte in block.tolist():
            nibbles[byte >> 4] += 1
            nibbles[byte & 15] += 1
        poker = 16 / 5000 * sum(f * f for f in nibbles) - 5000
        runs, current, length, longest = [[0] * 6, [0] * 6], bits[0], 0, 0
        for bit in [*bits, 2]:
            if bit == current:
                length += 1
                continue
            runs[current][min(length, 6) - 1] += 1
            longest = max(longest, length)
            current, length = bit, 1
        expected[0] += not 9725 < sum(bits) < 10275
        expected[1] += not 2.16 < poker < 46.17
        expected[2] += any(not lo[i] <= runs[v][i] <= hi[i] for v in (0, 1) for i in range(6))
        expected[3] += longest >= 26
    tests = _tests(randomness_report(data.tobytes()))
    names = ("monobit", "poker", "runs", "long_run")
    assert [tests[f"fips140_2_{n}"]["blocks_failed"] for n in names] == expected


def test_sp800_22_statistics_match_a_bit_array_implementation() -> None:
    """Frequency, block frequency and runs statistics equal the §2.1-§2.3 formulas on bits."""
    data = _seeded(10_001, seed=4)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
    n = bits.size
    tests = _tests(randomness_report(data))
    s_obs = abs(int((2 * bits - 1).sum())) / math.sqrt(n)
    assert tests["sp800_22_frequency"]["statistic"] == pytest.approx(s_obs)
    assert tests["sp800_22_frequency"]["p_value"] == pytest.approx(math.erfc(s_obs / math.sqrt(2)))
    blocks = bits[: n // 128 * 128].reshape(-1, 128).mean(axis=1)
    chi2 = 4 * 128 * float(((blocks - 0.5) ** 2).sum())
    assert tests["sp800_22_block_frequency"]["statistic"] == pytest.approx(chi2)
    assert tests["sp800_22_block_frequency"]["blocks"] == n // 128
    v_obs = 1 + int(np.count_nonzero(bits[1:] != bits[:-1]))
    assert tests["sp800_22_runs"]["statistic"] == v_obs


def test_igamc_matches_known_values() -> None:
    """igamc reproduces SP 800-22's worked examples and closed forms, in both branches."""
    assert igamc(1.5, 0.5) == pytest.approx(0.801252, abs=1e-6)  # SP 800-22 §2.2.4
    assert igamc(5.0, 3.6) == pytest.approx(0.706438, abs=1e-6)  # SP 800-22 §2.2.8
    for x in (0.1, 1.0, 2.0, 7.5, 30.0):
        assert igamc(1.0, x) == pytest.approx(math.exp(-x), rel=1e-12)
        assert igamc(0.5, x) == pytest.approx(math.erfc(math.sqrt(x)), rel=1e-10)
    for a, x in ((1000, 950.0), (1000, 1000.0), (1000, 1100.0), (20, 3.0), (20, 40.0)):
        # Q(a, x) = exp(-x) sum_{k < a} x^k / k! for integer a, summed in log space.
        exact = math.fsum(math.exp(-x + k * math.log(x) - math.lgamma(k + 1)) for k in range(a))
        assert igamc(float(a), x) == pytest.approx(exact, rel=1e-9)
    assert igamc(3.0, 0.0) == 1.0
    with pytest.raises(ValueError, match="igamc"):
        igamc(0.0, 1.0)
    with pytest.raises(ValueError, match="igamc"):
        igamc(1.0, -1.0)


def test_too_short_input_raises_value_error() -> None:
    """Fewer than 2,500 bytes cannot fill one FIPS block and are refused."""
    with pytest.raises(ValueError, match="at least 2500 bytes"):
        randomness_report(bytes(MIN_BYTES - 1))
    report = randomness_report(_seeded(MIN_BYTES, seed=8))
    assert report["bytes_tested"] == MIN_BYTES
    assert _tests(report)["fips140_2_monobit"]["blocks_tested"] == 1


def test_fips_failure_allowance_is_a_binomial_critical_value() -> None:
    """One block is judged alone; 50 blocks tolerate 3 chance failures (6 for runs)."""
    assert fips_failures_allowed(1) == 0
    assert fips_failures_allowed(50) == 3
    assert fips_failures_allowed(50, "runs") == 6
    assert fips_failures_allowed(4000) < 0.01 * 4000
    assert randomness.FAIL_P_VALUE < randomness.SIGNIFICANCE
