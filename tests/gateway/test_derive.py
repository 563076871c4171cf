"""Derivations: uniform integers without modulo bias, 53-bit floats, v4 UUIDs, encodings."""

from __future__ import annotations

import base64
import math
import os
import uuid

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qrng_dd.gateway import derive
from qrng_dd.gateway.derive import INT64_MAX, INT64_MIN


def test_hex_is_lowercase_and_base64_is_padded() -> None:
    """Encodings match what clients of the Rust implementation expect."""
    assert derive.encode(b"\xab\xcd", "hex") == b"abcd"
    assert derive.encode(b"\xff", "base64") == b"/w=="
    assert derive.encode(b"\x00\x01", "binary") == b"\x00\x01"


@given(
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(1, 50),
)
def test_integers_stay_in_any_signed_64_bit_range(a: int, b: int, count: int) -> None:
    """Every value lies in [low, high], both inclusive."""
    low, high = min(a, b), max(a, b)
    values = derive.integers(os.urandom, count, low, high)
    assert len(values) == count
    assert all(low <= v <= high for v in values)


def test_degenerate_and_full_ranges_work() -> None:
    """min == max gives that value; the full 64-bit range does not crash."""
    assert derive.integers(os.urandom, 5, 7, 7) == [7] * 5
    full = derive.integers(os.urandom, 1000, INT64_MIN, INT64_MAX)
    assert any(v < 0 for v in full)
    assert any(v > 0 for v in full)


def test_reversed_bounds_are_a_caller_error() -> None:
    """low > high raises ValueError."""
    with pytest.raises(ValueError, match="low <= high"):
        derive.integers(os.urandom, 1, 2, 1)


def test_no_modulo_bias_on_a_range_of_three_times_two_to_the_62() -> None:
    """A third of the draws land in the lowest third (modulo would give a half)."""
    low, high = -(2**63), 2**62 - 1  # 3 * 2**62 values
    n = 60_000
    values = derive.integers(os.urandom, n, low, high)
    third = low + 2**62
    share = sum(v < third for v in values) / n
    sigma = math.sqrt((1 / 3) * (2 / 3) / n)
    assert abs(share - 1 / 3) < 6 * sigma


def test_rejection_reads_more_bytes_when_draws_are_refused() -> None:
    """Draws at or above the acceptance limit are thrown away, not folded."""
    stream = iter([b"\xff" * 8, (5).to_bytes(8, "little")])
    values = derive.integers(lambda n: next(stream), 1, -(2**63), 2**62 - 1)
    assert values == [-(2**63) + 5]


def test_floats_are_in_the_unit_interval_with_53_bits() -> None:
    """All-ones bits give the largest double below 1; zeros give 0."""
    assert derive.floats(lambda n: b"\xff" * n, 1) == [1 - 2**-53]
    assert derive.floats(lambda n: b"\x00" * n, 1) == [0.0]
    values = derive.floats(os.urandom, 1000)
    assert all(0.0 <= v < 1.0 for v in values)


@given(st.binary(min_size=16, max_size=16))
def test_uuids_have_version_4_and_the_rfc_variant(raw: bytes) -> None:
    """Any 16 bytes become an RFC 9562 v4 UUID."""
    u = uuid.UUID(derive.uuid4(raw))
    assert u.version == 4
    assert u.variant == uuid.RFC_4122


def test_monte_carlo_on_good_bytes_is_near_pi() -> None:
    """200k points of OS randomness estimate pi well."""
    report = derive.monte_carlo_pi(os.urandom(16 * 200_000))
    assert report["iterations"] == 200_000
    assert abs(float(report["estimated_pi"]) - math.pi) < 0.05  # type: ignore[arg-type]


def test_monte_carlo_on_constant_bytes_is_poor() -> None:
    """Stuck input is flagged as poor."""
    report = derive.monte_carlo_pi(b"\x00" * 16 * 1000)
    assert report["quality_assessment"] == "poor"


def test_base64_roundtrip() -> None:
    """base64 decodes back to the bytes."""
    data = os.urandom(33)
    assert base64.b64decode(derive.encode(data, "base64")) == data


# -- the small-count paths against numpy --------------------------------------------------


class _Stream:
    """A reader over fixed bytes that records how much was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        assert len(chunk) == n
        self.pos += n
        return chunk


_BOUNDS = [
    (0, 100),
    (5, 5),
    (-3, 3),
    (INT64_MIN, INT64_MIN + 3 * 2**62 - 1),  # a quarter of all draws rejected
    (INT64_MIN, INT64_MAX),
    (INT64_MIN, INT64_MIN + 2**63 + 2**62),
    (INT64_MAX - 1, INT64_MAX),
    (0, 2**32 - 1),
    (-(2**40), 2**41 + 12345),
]


@pytest.mark.parametrize(("low", "high"), _BOUNDS)
def test_small_integers_match_the_numpy_path_byte_for_byte(low: int, high: int) -> None:
    for count in (1, 2, 10, derive.SMALL_INTEGERS):
        for _ in range(20):
            data = os.urandom(8 * count * 8)
            small, big = _Stream(data), _Stream(data)
            expected = derive._integers_numpy(big.read, count, low, high)
            assert derive.integers(small.read, count, low, high) == expected
            assert small.pos == big.pos
            assert all(low <= v <= high for v in expected)


def test_small_floats_match_the_numpy_path() -> None:

    for count in (1, 10, derive.SMALL_FLOATS):
        data = os.urandom(8 * count)
        draws = np.frombuffer(data, dtype="<u8") >> np.uint64(11)
        expected = (draws.astype(np.float64) * 2.0**-53).tolist()
        assert derive.floats(_Stream(data).read, count) == expected
    edge = b"\xff" * 8 + b"\x00" * 8
    assert derive.floats(_Stream(edge).read, 2) == [1 - 2.0**-53, 0.0]
