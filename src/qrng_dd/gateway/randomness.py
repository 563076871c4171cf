"""Statistical self-test report over a byte string (FIPS 140-2, SP 800-22, SP 800-90B).

Theory of operation
-------------------
:func:`randomness_report` runs a small battery of classical tests over bytes taken from the pool
and returns a JSON-ready dict. It is an operator's sanity check, not a certification: a finite
sample can only show gross defects (a stuck bit, a bias, correlation), never prove randomness.
Bits are read most significant bit first within each byte (``np.unpackbits`` order).

* **FIPS 140-2 §4.9.1** statistical tests (withdrawn from FIPS 140-2 by Change Notice 1 but still
  the common quick check, e.g. rngtest) on every whole 20,000-bit block (2,500 bytes; trailing
  bytes are not seen by these four): *monobit* (9725 < ones < 10275), *poker* (on the 5,000
  4-bit nibbles, 2.16 < X < 46.17), *runs* (the number of runs of each length 1..5 and 6+, of
  zeros and of ones separately, within the intervals of §4.9.1) and *long run* (no run of 26 or
  more). A block of good data fails one of them about 0.5% of the time (measured on 40,000
  blocks: monobit 0.02%, poker 0.01%, long run 0.02%, and runs 0.4%, whose twelve intervals are
  tight), so a test fails only when more blocks fail than chance explains: more than
  :func:`fips_failures_allowed`.
* **SP 800-22 rev. 1a** tests on the whole bit string, each with a p-value, passing at
  p >= 0.01 (§4.2.1): *frequency* (§2.1), *block frequency* with M = 128 (§2.2, using ``igamc``,
  the regularized upper incomplete gamma function, implemented here), *runs* (§2.3).
* **Serial correlation** of successive bytes (Knuth, TAOCP vol. 2 §3.3.2 K; the statistic of the
  ``ent`` tool; not one of the SP 800-22 tests): the lag-1 autocorrelation ``r`` of the bytes,
  whose distribution for independent bytes is close to N(0, 1/n); p = erfc(|r| sqrt(n/2)).
* **Entropy**: Shannon entropy of the byte histogram and the SP 800-90B §6.3.1 most-common-value
  min-entropy estimate (with the 99% upper confidence bound on the most common value's
  probability), both in bits per byte.

Verdict. Each p-value test fails good data 1% of the time, so one of the four fails about 4% of
the time by chance. Calling that a failed source would be a false alarm on every 25th report, so
the report has three levels (as dieharder's PASSED / WEAK / FAILED): ``pass`` when every test
passes; ``weak`` when some p-value is below 0.01 but none below :data:`FAIL_P_VALUE` (re-test
with fresh bytes); ``fail`` when a p-value is below :data:`FAIL_P_VALUE` or a FIPS test fails.
``passed`` is true unless the verdict is ``fail``.

Everything is vectorised with numpy (bit counts by table lookup, runs from transition indices);
FIPS blocks are processed in chunks so memory stays bounded for large inputs. Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import Literal, NotRequired, TypedDict, final

import numpy as np
import numpy.typing as npt

from qrng_dd.gateway.special import binomial_sf, igamc

__all__ = [
    "FAIL_P_VALUE",
    "FIPS_BLOCK_BYTES",
    "MIN_BYTES",
    "SIGNIFICANCE",
    "FipsTest",
    "PValueTest",
    "RandomnessReport",
    "fips_failures_allowed",
    "randomness_report",
]

# FIPS 140-2 §4.9.1 tests a single stream of 20,000 consecutive bits.
FIPS_BLOCK_BITS = 20_000
FIPS_BLOCK_BYTES = FIPS_BLOCK_BITS // 8

# The smallest input: one FIPS block. It is also far above the SP 800-22 minimum lengths
# (n >= 100 bits for frequency and runs, n >= M = 128 for block frequency).
MIN_BYTES = FIPS_BLOCK_BYTES

# SP 800-22 §4.2.1: a sequence passes a test when its p-value is >= 0.01.
SIGNIFICANCE = 0.01

# A p-value this small is evidence of a real defect, not chance: good data produces one in any
# of the four p-value tests with probability ~4e-6 (dieharder also calls p < 1e-6 FAILED).
FAIL_P_VALUE = 1e-6

# Upper bounds on the chance that one block of good data fails each FIPS test. Measured on
# 40,000 blocks of a seeded PCG64 stream: monobit 1.8e-4 (theory: |Z| >= 275 / 70.7 gives 1.0e-4),
# poker 1.3e-4, long run 1.5e-4 (theory: ~20,000 * 2^-27 per polarity) and runs 4.2e-3: its
# twelve intervals are only ~3.5 sigma wide each.
_FIPS_BLOCK_FALSE_RATE = {"monobit": 1e-3, "poker": 1e-3, "runs": 1e-2, "long_run": 1e-3}
# A FIPS test fails when the number of failed blocks has at most this probability under good data.
_FIPS_REPORT_FALSE_RATE = 1e-6

# FIPS 140-2 §4.9.1 runs test: allowed number of runs of length 1, 2, 3, 4, 5 and 6+ (inclusive),
# the same for runs of zeros and runs of ones.
_RUN_LO = np.array([2343, 1135, 542, 251, 111, 111])
_RUN_HI = np.array([2657, 1365, 708, 373, 201, 201])
# FIPS 140-2 §4.9.1 long run test: a run of 26 or more fails.
_LONG_RUN = 26
# FIPS 140-2 §4.9.1 monobit and poker acceptance intervals (exclusive bounds).
_MONOBIT_LO, _MONOBIT_HI = 9725, 10275
_POKER_LO, _POKER_HI = 2.16, 46.17

# Blocks per numpy chunk: 128 blocks = 320 KB of input, ~2.6 M bits; bounds temporary arrays to
# tens of MB whatever the input size.
_CHUNK_BLOCKS = 128

# SP 800-22 §2.2: block length M for the block frequency test (M >= 20, M > 0.01 n).
_BLOCK_FREQUENCY_M = 128

# SP 800-90B §6.3.1: z_(1-0.005) = 2.576 gives the 99% upper confidence bound on p_max.
_Z_99 = 2.576

_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)
# Transitions between the 7 adjacent bit pairs inside a byte (bit i vs bit i+1).
_INTRA_TRANSITIONS = np.array([bin((b ^ (b >> 1)) & 0x7F).count("1") for b in range(256)])

_U8 = npt.NDArray[np.uint8]

Verdict = Literal["pass", "weak", "fail"]


@final  # so that `"p_value" in test` tells the two kinds of entry apart
class FipsTest(TypedDict):
    """A FIPS 140-2 test, judged on how many of the 20,000-bit blocks failed it."""

    name: str
    reference: str
    passed: bool
    blocks_tested: int
    blocks_failed: int
    failures_allowed: int


@final
class PValueTest(TypedDict):
    """A test over the whole bit string, judged on its p-value."""

    name: str
    reference: str
    passed: bool
    p_value: float
    statistic: float | None
    block_bits: NotRequired[int]
    blocks: NotRequired[int]


class RandomnessReport(TypedDict):
    """``POST /api/test/randomness``; see the module docstring for how to read it."""

    bytes_tested: int
    tests: list[FipsTest | PValueTest]
    shannon_entropy_bits_per_byte: float
    min_entropy_bits_per_byte: float
    verdict: Verdict
    passed: bool
    note: str


def fips_failures_allowed(blocks: int, test: str = "monobit") -> int:
    """
    Return how many failed blocks a FIPS 140-2 test tolerates out of ``blocks``.

    The smallest ``k`` such that, if each block failed independently with the test's bounded
    false-failure rate for good data (1e-3; 1e-2 for ``runs``), more than ``k`` failures would
    occur with probability at most 1e-6; but never more than ``blocks - 1``, so a single block is
    judged on its own. For 50 blocks (125,000 bytes): 3, and 6 for ``runs``.

    Args:
        blocks: the number of 20,000-bit blocks tested, >= 1.
        test: ``monobit``, ``poker``, ``runs`` or ``long_run``.

    Returns:
        The allowed number of failed blocks.

    Raises:
        KeyError: for an unknown test name.
    """
    rate = _FIPS_BLOCK_FALSE_RATE[test]
    k = int(blocks * rate)  # below the mean the tail is far above the target
    while binomial_sf(blocks, rate, k) > _FIPS_REPORT_FALSE_RATE:
        k += 1
    return min(k, blocks - 1)


def _fips_block_failures(x: _U8) -> tuple[int, int, int, int]:
    """Count blocks failing monobit, poker, runs and long run, in that order."""
    blocks = x.size // FIPS_BLOCK_BYTES
    failed = np.zeros(4, dtype=np.int64)
    for first in range(0, blocks, _CHUNK_BLOCKS):
        nb = min(_CHUNK_BLOCKS, blocks - first)
        chunk = x[first * FIPS_BLOCK_BYTES : (first + nb) * FIPS_BLOCK_BYTES]
        rows = chunk.reshape(nb, FIPS_BLOCK_BYTES)

        ones = _POPCOUNT[rows].sum(axis=1)
        monobit_bad = (ones <= _MONOBIT_LO) | (ones >= _MONOBIT_HI)

        block_of_byte = np.repeat(np.arange(nb), FIPS_BLOCK_BYTES)
        nibble_counts = np.bincount(
            np.concatenate((block_of_byte * 16 + (chunk >> 4), block_of_byte * 16 + (chunk & 15))),
            minlength=nb * 16,
        ).reshape(nb, 16)
        poker = 16.0 / 5000.0 * (nibble_counts.astype(np.float64) ** 2).sum(axis=1) - 5000.0
        poker_bad = (poker <= _POKER_LO) | (poker >= _POKER_HI)

        # Runs: a run starts where a bit differs from its predecessor or a block begins.
        bits = np.unpackbits(chunk)
        starts_mask = np.empty(bits.size, dtype=np.bool_)
        starts_mask[0] = True
        np.not_equal(bits[1:], bits[:-1], out=starts_mask[1:])
        starts_mask[::FIPS_BLOCK_BITS] = True
        starts = starts_mask.nonzero()[0]
        lengths = np.diff(starts, append=bits.size)
        run_block = starts // FIPS_BLOCK_BITS
        category = (run_block * 2 + bits[starts]) * 6 + np.minimum(lengths, 6) - 1
        run_counts = np.bincount(category, minlength=nb * 12).reshape(nb, 2, 6)
        runs_bad = ((run_counts < _RUN_LO) | (run_counts > _RUN_HI)).any(axis=(1, 2))

        block_first_run = np.searchsorted(starts, np.arange(nb) * FIPS_BLOCK_BITS)
        long_bad = np.maximum.reduceat(lengths, block_first_run) >= _LONG_RUN

        failed += [
            np.count_nonzero(monobit_bad),
            np.count_nonzero(poker_bad),
            np.count_nonzero(runs_bad),
            np.count_nonzero(long_bad),
        ]
    return int(failed[0]), int(failed[1]), int(failed[2]), int(failed[3])


def _frequency(ones: int, n: int) -> tuple[float, float]:
    """SP 800-22 §2.1: return (S_obs, p-value)."""
    s_obs = abs(2 * ones - n) / math.sqrt(n)
    return s_obs, math.erfc(s_obs / math.sqrt(2.0))


def _block_frequency(x: _U8) -> tuple[float, float, int]:
    """SP 800-22 §2.2 with M = 128 (16 bytes): return (chi^2, p-value, number of blocks)."""
    per_block = _BLOCK_FREQUENCY_M // 8
    blocks = x.size // per_block
    ones = _POPCOUNT[x[: blocks * per_block]].reshape(blocks, per_block).sum(axis=1)
    pi = ones / _BLOCK_FREQUENCY_M
    chi2 = float(4.0 * _BLOCK_FREQUENCY_M * ((pi - 0.5) ** 2).sum())
    return chi2, igamc(blocks / 2.0, chi2 / 2.0), blocks


def _runs(x: _U8, ones: int, n: int) -> tuple[float | None, float]:
    """SP 800-22 §2.3: return (V_obs, p-value); V_obs None if the frequency prerequisite fails."""
    pi = ones / n
    if abs(pi - 0.5) >= 2.0 / math.sqrt(n):  # §2.3.4 (3): the test is not applicable: p = 0
        return None, 0.0
    inter = np.count_nonzero((x[:-1] & 1) != (x[1:] >> 7))
    v_obs = 1 + int(_INTRA_TRANSITIONS[x].sum()) + int(inter)
    expected = 2.0 * n * pi * (1.0 - pi)
    p = math.erfc(abs(v_obs - expected) / (2.0 * math.sqrt(2.0 * n) * pi * (1.0 - pi)))
    return float(v_obs), p


def _serial_correlation(x: _U8) -> tuple[float, float]:
    """Lag-1 serial correlation coefficient of the bytes and its two-sided p-value."""
    centred = x.astype(np.float64)
    centred -= centred.mean()
    denominator = float(np.dot(centred, centred))
    if denominator == 0.0:  # constant data: perfectly predictable
        return 1.0, 0.0
    r = float(np.dot(centred[:-1], centred[1:])) / denominator
    return r, math.erfc(abs(r) * math.sqrt(x.size / 2.0))


def _entropies(x: _U8) -> tuple[float, float]:
    """Return (Shannon entropy, SP 800-90B §6.3.1 MCV min-entropy), bits per byte."""
    counts = np.bincount(x, minlength=256)
    p = counts[counts > 0] / x.size
    shannon = float(-(p * np.log2(p)).sum())
    p_hat = float(counts.max()) / x.size
    p_upper = min(1.0, p_hat + _Z_99 * math.sqrt(p_hat * (1.0 - p_hat) / (x.size - 1)))
    return max(0.0, shannon), -math.log2(p_upper)


def _p_entry(name: str, reference: str, p_value: float, statistic: float | None) -> PValueTest:
    return {
        "name": name,
        "reference": reference,
        "passed": p_value >= SIGNIFICANCE,
        "p_value": p_value,
        "statistic": statistic,
    }


def randomness_report(data: bytes) -> RandomnessReport:
    """
    Run the self-test battery over ``data`` and return a JSON-ready report.

    Args:
        data: the bytes to test, at least :data:`MIN_BYTES` (2,500).

    Returns:
        A dict with ``bytes_tested``; ``tests``, a list of entries with ``name``,
        ``reference``, ``passed`` and either ``p_value`` (plus a statistic) or block counts
        (``blocks_tested``, ``blocks_failed``, ``failures_allowed``);
        ``shannon_entropy_bits_per_byte``; ``min_entropy_bits_per_byte``; ``verdict``
        (``pass`` / ``weak`` / ``fail``, see the module docstring); ``passed`` (verdict is not
        ``fail``) and a ``note`` on how to read it.

    Raises:
        ValueError: if ``data`` is shorter than :data:`MIN_BYTES`.
    """
    x: _U8 = np.frombuffer(data, dtype=np.uint8)
    if x.size < MIN_BYTES:
        msg = f"need at least {MIN_BYTES} bytes for a randomness report, got {x.size}"
        raise ValueError(msg)
    n = x.size * 8
    ones = int(_POPCOUNT[x].sum())

    blocks = x.size // FIPS_BLOCK_BYTES
    fips_names = ("monobit", "poker", "runs", "long_run")
    fips: list[FipsTest] = [
        {
            "name": f"fips140_2_{name}",
            "reference": "FIPS 140-2 §4.9.1",
            "passed": failed <= fips_failures_allowed(blocks, name),
            "blocks_tested": blocks,
            "blocks_failed": failed,
            "failures_allowed": fips_failures_allowed(blocks, name),
        }
        for name, failed in zip(fips_names, _fips_block_failures(x), strict=True)
    ]

    s_obs, p_freq = _frequency(ones, n)
    chi2, p_block, m_blocks = _block_frequency(x)
    v_obs, p_runs = _runs(x, ones, n)
    r, p_serial = _serial_correlation(x)
    block = _p_entry("sp800_22_block_frequency", "SP 800-22 rev. 1a §2.2", p_block, chi2)
    block["block_bits"], block["blocks"] = _BLOCK_FREQUENCY_M, m_blocks
    p_tests = [
        _p_entry("sp800_22_frequency", "SP 800-22 rev. 1a §2.1", p_freq, statistic=s_obs),
        block,
        _p_entry("sp800_22_runs", "SP 800-22 rev. 1a §2.3", p_runs, statistic=v_obs),
        _p_entry(
            "serial_correlation", "Knuth TAOCP vol. 2 §3.3.2 (lag-1, bytes)", p_serial, statistic=r
        ),
    ]

    p_values = [p_freq, p_block, p_runs, p_serial]
    verdict: Verdict
    if any(not entry["passed"] for entry in fips) or min(p_values) < FAIL_P_VALUE:
        verdict = "fail"
    elif min(p_values) < SIGNIFICANCE:
        verdict = "weak"
    else:
        verdict = "pass"
    shannon, min_entropy = _entropies(x)
    return {
        "bytes_tested": int(x.size),
        "tests": [*fips, *p_tests],
        "shannon_entropy_bits_per_byte": shannon,
        "min_entropy_bits_per_byte": min_entropy,
        "verdict": verdict,
        "passed": verdict != "fail",
        "note": (
            "A statistical sanity check, not proof of randomness. FIPS 140-2 tests run on "
            "each whole 2,500-byte block; good data fails about 0.5% of blocks (mostly the "
            "runs test), so each FIPS test allows a few failed blocks. Each p-value test "
            "passes at p >= 0.01, so good data fails one of the four about 4% of the time: "
            "that is a 'weak' verdict, re-test with fresh bytes. 'fail' means a FIPS test "
            "failed or a p-value is below 1e-6. Min-entropy is the SP 800-90B "
            "most-common-value estimate (99% upper bound)."
        ),
    }
