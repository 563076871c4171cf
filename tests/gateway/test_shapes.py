"""The shapes, byte for byte and in distribution: every one uniform by construction.

Chi-square bounds are the statistic's mean plus ten standard deviations (dof + 10·sqrt(2·dof)):
a fair source exceeds that with probability far below 10^-12, a biased shape (modulo bias,
an off-by-one) exceeds it at these sample sizes every time.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qrng_dd.gateway import shapes
from qrng_dd.gateway.shaped import ALPHANUMERIC


def _reader(data: bytes) -> Callable[[int], bytes]:
    """A read() over ``data`` that fails loudly when a shape asks for more."""
    offset = 0

    def read(n: int) -> bytes:
        nonlocal offset
        chunk = data[offset : offset + n]
        assert len(chunk) == n, "read past the end"
        offset += n
        return chunk

    return read


def _chi_square(counts: Iterable[int], cells: int) -> None:
    values = list(counts)
    values += [0] * (cells - len(values))
    total = sum(values)
    expected = total / cells
    statistic = sum((c - expected) ** 2 / expected for c in values)
    dof = cells - 1
    assert statistic < dof + 10 * math.sqrt(2 * dof), statistic


def test_indices_by_byte_keep_only_bytes_below_the_largest_multiple() -> None:
    """Size 6: bytes 252..255 are refused (252 = 42 * 6), the rest reduced modulo 6."""
    read = _reader(bytes([0, 5, 6, 252, 255, 251, 7, 8]))  # the last read asks for 2
    assert shapes.indices(read, 5, 6) == [0, 5, 0, 5, 1]


def test_indices_above_256_use_64_bit_rejection() -> None:
    """Size 1000: one little-endian 64-bit draw per value, reduced modulo 1000."""
    draws = [123_456, 2**64 - 1, 999]  # 2^64 - 1 is above the largest multiple: refused
    read = _reader(b"".join(d.to_bytes(8, "little") for d in draws))
    assert shapes.indices(read, 2, 1000) == [456, 999]


@pytest.mark.parametrize("size", [2, 3, 6, 62, 100, 129, 255, 256, 257, 1000])
def test_indices_are_uniform(size: int) -> None:
    counts = Counter(shapes.indices(os.urandom, 200 * size, size))
    assert set(counts) <= set(range(size))
    _chi_square(counts.values(), size)


def test_strings_over_62_characters_are_uniform() -> None:
    """The issue's case: 60,000+ characters of [A-Za-z0-9], every character as likely."""
    values = shapes.strings(os.urandom, 1000, 64, ALPHANUMERIC)
    assert all(len(v) == 64 for v in values)
    counts = Counter("".join(values))
    assert set(counts) <= set(ALPHANUMERIC)
    _chi_square(counts.values(), 62)


def test_sample_is_distinct_and_every_ordering_equally_likely() -> None:
    """All 24 orderings of 4 of 4, and all 60 ordered picks of 3 of 5, equally often."""
    perms = Counter(tuple(shapes.sample(os.urandom, 4, 4)) for _ in range(24 * 400))
    assert len(perms) == 24
    _chi_square(perms.values(), 24)
    picks = Counter(tuple(shapes.sample(os.urandom, 5, 3)) for _ in range(60 * 300))
    assert all(len(set(p)) == 3 for p in picks)
    _chi_square(picks.values(), 60)


def test_sample_from_a_huge_population_takes_few_draws() -> None:
    """10 of 2^53 values: 10 draws of 8 bytes, no array of the population."""
    data = os.urandom(8 * 20)
    read = _reader(data)
    values = shapes.sample(read, 2**53, 10)
    assert len(set(values)) == 10
    assert all(0 <= v < 2**53 for v in values)


@given(st.integers(0, 50), st.data())
def test_sample_of_everything_is_a_permutation(size: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, size))
    values = shapes.sample(os.urandom, size, k)
    assert len(values) == len(set(values)) == k
    assert set(values) <= set(range(size))
    if k == size:
        assert sorted(values) == list(range(size))


def test_sample_refuses_more_than_the_population() -> None:
    with pytest.raises(ValueError, match="distinct"):
        shapes.sample(os.urandom, 3, 4)


def test_shuffle_keeps_the_items() -> None:
    items = [f"item{i}" for i in range(100)]
    assert sorted(shapes.shuffle(os.urandom, items)) == sorted(items)


def test_gaussians_have_the_asked_mean_and_spread_and_normal_deciles() -> None:
    values = shapes.gaussians(os.urandom, 50_000, 10.0, 2.0)
    assert all(math.isfinite(v) for v in values)
    assert abs(statistics.fmean(values) - 10.0) < 10 * 2.0 / math.sqrt(50_000)
    assert abs(statistics.stdev(values) - 2.0) < 0.05
    # Deciles of N(10, 2): each tenth of the values falls in each tenth of the distribution.
    dist = statistics.NormalDist(10.0, 2.0)
    counts = Counter(min(9, int(dist.cdf(v) * 10)) for v in values)
    _chi_square(counts.values(), 10)


def test_gaussians_are_finite_at_the_extremes() -> None:
    """The smallest and largest inputs map to finite values, symmetric about 0."""
    lowest = shapes.gaussians(_reader(bytes(8)), 1)[0]
    highest = shapes.gaussians(_reader(b"\xff" * 8), 1)[0]
    assert math.isfinite(lowest)
    assert math.isfinite(highest)
    assert lowest == pytest.approx(-highest)
    assert -8.3 < lowest < -8


def test_decimal_fractions_take_every_value_equally() -> None:
    values = shapes.decimal_fractions(os.urandom, 20_000, 2)
    assert all(0 <= v < 1 and round(v, 2) == v for v in values)
    _chi_square(Counter(values).values(), 100)


@pytest.mark.parametrize(
    ("notation", "parsed"),
    [
        ("3d6", (3, 6, 0)),
        ("d20", (1, 20, 0)),
        ("1D20+5", (1, 20, 5)),
        ("2d8-1", (2, 8, -1)),
        (" 4d4 ", (4, 4, 0)),
    ],
)
def test_dice_notation(notation: str, parsed: tuple[int, int, int]) -> None:
    assert shapes.parse_dice(notation) == parsed


@pytest.mark.parametrize(
    "notation", ["", "d", "3d", "6", "3x6", "3d6+", "3d6*2", "-1d6", "1d6+1+1"]
)
def test_not_dice_notation(notation: str) -> None:
    assert shapes.parse_dice(notation) is None


def test_dice_are_fair() -> None:
    rolls = shapes.dice(os.urandom, 12_000, 6)
    assert set(rolls) == {1, 2, 3, 4, 5, 6}
    _chi_square(Counter(rolls).values(), 6)
