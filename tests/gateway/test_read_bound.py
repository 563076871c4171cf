"""The most bytes rejection sampling reads (:func:`derive.read_bound`), and the capacity guard
built on it: exact values, the exact negative-binomial tail, what the derivations really read
from many fixed sources, and the refusals of requests whose nominal cost fits the pool but
whose draws may not."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from fractions import Fraction
from math import comb
from typing import Any

import pytest

from qrng_dd.gateway import derive, shapes
from qrng_dd.gateway.api import Route
from qrng_dd.gateway.compat.randomorg_methods import prepare
from qrng_dd.gateway.derive import BOUND_FAILURE, Reads, draws_bound, integer_reads, read_bound
from qrng_dd.gateway.problem import Problem
from qrng_dd.gateway.routes import BY_NAME
from qrng_dd.gateway.shaped import ALPHANUMERIC
from tests.support.gateway import gateway_settings

INT64_MIN, INT64_MAX = derive.INT64_MIN, derive.INT64_MAX
#: The small pool of the schema fuzzer (tests/fuzz/test_schema.py).
POOL = 4096
#: The top of a range of 3 * 2^62 values from INT64_MIN: a quarter of the 64-bit draws refused.
THREE_QUARTERS = INT64_MIN + 3 * 2**62 - 1


class Counted:
    """A ``read`` over a seeded stream of bytes that counts what it handed out."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.used = 0

    def read(self, n: int) -> bytes:
        self.used += n
        return self.rng.randbytes(n)


def _used(fn: Callable[[derive.Reader], Any], seed: int) -> int:
    source = Counted(seed)
    fn(source.read)
    return source.used


# -- the bound on draws --------------------------------------------------------------------------


def _tail(count: int, t: int, reject: Fraction) -> Fraction:
    """The exact chance that more than ``t`` draws are read to accept ``count``: fewer than
    ``count`` of the first ``t`` accepted."""
    accept = 1 - reject
    return sum(
        (comb(t, j) * accept**j * reject ** (t - j) for j in range(count)), start=Fraction(0)
    )


@pytest.mark.parametrize(
    ("count", "reject"),
    [(1, Fraction(1, 2)), (5, Fraction(1, 2)), (40, Fraction(127, 256)), (100, Fraction(1, 32)),
     (300, Fraction(1, 64)), (64, Fraction(1, 3)), (1, Fraction(1, 32)), (200, Fraction(1, 1000))],
)  # fmt: skip
def test_the_bound_holds_against_the_exact_tail_and_is_close_to_it(
    count: int, reject: Fraction
) -> None:
    """Exceeded with at most 2^-40, and within 6 % of the fewest draws that are."""
    t = draws_bound(count, float(reject))
    assert _tail(count, t, reject) <= Fraction(BOUND_FAILURE)
    fewest = count
    while _tail(count, fewest, reject) > Fraction(BOUND_FAILURE):
        fewest += 1
    assert fewest <= t <= 1.06 * fewest


def test_exact_values() -> None:
    assert BOUND_FAILURE == 2.0**-40
    assert draws_bound(1, 0.5) == 40  # one draw: 2^-40 exactly
    assert draws_bound(0, 0.5) == 0
    assert draws_bound(7, 0.0) == 7  # nothing refused: exactly the count
    # 1024 draws over [-2^63, 0], about half refused: mean 2048, bound mean + 8 sigma.
    assert draws_bound(1024, derive.reject64(2**63 + 1)) == 2411
    # A refusal as unlikely as 2^64 mod 1000 / 2^64: nothing more than the count.
    assert draws_bound(512, derive.reject64(1000)) == 512
    # A 62-letter alphabet refuses bytes >= 248.
    assert draws_bound(4096, 8 / 256) == 4324
    with pytest.raises(ValueError, match="positive probability"):
        draws_bound(1, 1.0)


def test_reads_of_one_width_are_bounded_together_with_the_worst_rejection() -> None:
    merged = read_bound(Reads(8, 100, 0.25, 3), Reads(8, 50, 0.5), Reads(1, 10, 0.0, 2))
    assert merged == 8 * draws_bound(150, 0.5) + 3 + 10 + 2
    assert read_bound() == 0


def test_the_reads_each_derivation_states() -> None:
    assert integer_reads(10, INT64_MIN, INT64_MAX) == Reads(8, 10, 0.0)
    assert integer_reads(10, INT64_MIN, THREE_QUARTERS) == Reads(8, 10, 0.25)
    assert shapes.index_reads(4096, 62) == Reads(1, 4096, 8 / 256, 133)  # ceil(4096 * 8/248)
    assert shapes.index_reads(10, 16) == Reads(1, 10)
    assert shapes.index_reads(3, 1000) == integer_reads(3, 0, 999)
    # 512 items: 256 picks from more than 256 values, then 9 from a power of two (256, 128,
    # ..., 1: one byte each) and 247 from the others (byte pairs).
    big, whole, pairs = shapes.sample_reads(512, 512)
    assert (big.width, big.count, whole, pairs.width, pairs.count) == (8, 256, Reads(1, 9), 2, 247)
    assert pairs.reject == (127 / 256) ** 2  # 129 values: bytes >= 129 refused
    assert shapes.sample_reads(5, 0) == ()


# -- what the derivations really read, from fixed sources ----------------------------------------

SEEDS = range(200)


def _cases() -> Iterator[Any]:
    yield pytest.param(
        lambda read: derive.integers(read, 40, INT64_MIN, 0),
        read_bound(integer_reads(40, INT64_MIN, 0)), id="integers-half-refused",
    )  # fmt: skip
    yield pytest.param(
        lambda read: derive.integers(read, 200, INT64_MIN, THREE_QUARTERS),
        read_bound(integer_reads(200, INT64_MIN, THREE_QUARTERS)), id="integers-numpy",
    )  # fmt: skip
    for size in (6, 62, 129, 255, 256):
        yield pytest.param(
            lambda read, size=size: shapes.indices(read, 300, size),
            read_bound(shapes.index_reads(300, size)), id=f"indices-{size}",
        )  # fmt: skip
    yield pytest.param(
        lambda read: shapes.strings(read, 4, 60, ALPHANUMERIC),
        read_bound(shapes.index_reads(240, 62)), id="strings",
    )  # fmt: skip
    for size, count in ((300, 300), (2**62 + 2**61, 20), (200, 150)):
        yield pytest.param(
            lambda read, size=size, count=count: shapes.sample(read, size, count),
            read_bound(*shapes.sample_reads(size, count)), id=f"sample-{size}-{count}",
        )  # fmt: skip


@pytest.mark.parametrize(("fn", "bound"), list(_cases()))
def test_no_derivation_reads_more_than_its_bound(
    fn: Callable[[derive.Reader], Any], bound: int
) -> None:
    """200 seeded sources each: the most any reads stays within the bound (which is above
    the mean: these are not the bound's 2^-40 tail, only a check that it covers every way
    the derivation reads, its read-ahead included)."""
    used = [_used(fn, seed) for seed in SEEDS]
    assert max(used) <= bound
    assert sum(used) / len(used) <= bound


def test_the_bound_covers_the_read_ahead_of_expected_waste() -> None:
    """From bytes that are all accepted, :func:`shapes.indices` still reads the waste it
    expected in its one batch: 4096 letters of 62 read 4096 + 133 bytes, past the count;
    and a pick from 129 values reads a pair of bytes."""
    used = 0

    def zeros(n: int) -> bytes:
        nonlocal used
        used += n
        return bytes(n)

    shapes.indices(zeros, 4096, 62)
    assert used == 4096 + 133 <= read_bound(shapes.index_reads(4096, 62))
    used = 0
    shapes.sample(zeros, 129, 1)
    assert used == 2 <= read_bound(*shapes.sample_reads(129, 1))


# -- the capacity guard ---------------------------------------------------------------------------


def _route(name: str) -> Route:
    return BY_NAME[name].bind(gateway_settings({"QRNG_BUFFER_SIZE": str(POOL)}))


def _cost(name: str, args: dict[str, Any]) -> int:
    cost = BY_NAME[name].cost
    assert cost is not None
    return cost(args)


def _refused(name: str, **args: Any) -> str:
    with pytest.raises(Problem) as caught:
        _route(name).cost_of(args)
    assert caught.value.status == 400
    assert "retry-after" not in {k.lower() for k in caught.value.headers}
    return caught.value.detail


@pytest.mark.parametrize(
    ("name", "args", "named"),
    [
        ("integers", {"count": 512, "min": INT64_MIN, "max": 0}, "'count', 'min', 'max'"),
        ("strings", {"count": 4, "length": 1024, "alphabet": ALPHANUMERIC}, "'length'"),
        ("passwords", {"count": 32, "length": 128, "charset": "alphanumeric"}, "'count'"),
        ("sample", {"n": 2**53, "k": 512}, "'n', 'k'"),
    ],
)
def test_a_cost_that_fits_with_draws_that_may_not_is_refused_by_name(
    name: str, args: dict[str, Any], named: str
) -> None:
    assert _cost(name, args) <= POOL  # the nominal cost fits
    detail = _refused(name, **args)
    assert named in detail
    assert "may read up to" in detail


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("integers", {"count": 512, "min": INT64_MIN, "max": INT64_MAX}),  # nothing refused
        ("integers", {"count": 512, "min": 0, "max": 100}),  # refusals too unlikely to count
        ("integers", {"count": 173, "min": INT64_MIN, "max": 0}),
        ("strings", {"count": 4, "length": 1024, "alphabet": "0123456789abcdef"}),
        ("strings", {"count": 4, "length": 940, "alphabet": ALPHANUMERIC}),
        ("passwords", {"count": 29, "length": 128, "charset": "alphanumeric"}),
        ("sample", {"n": 1000, "k": 512}),
        ("dice", {"notation": "512d6"}),
        ("shuffle", {"items": ",".join(map(str, range(512)))}),
    ],
)
def test_a_request_whose_bound_fits_is_charged_its_cost(name: str, args: dict[str, Any]) -> None:
    route = _route(name)
    assert route.bound is not None
    assert route.bound(args) <= POOL
    assert route.cost_of(args) == _cost(name, args)


def test_a_cost_over_the_pool_is_still_refused_whatever_the_draws_read() -> None:
    """513d6 reads about 540 bytes, but costs 8 a die: what it is charged must fit too."""
    assert read_bound(shapes.index_reads(513, 6)) < POOL
    assert "needs 4104 bytes" in _refused("dice", notation="513d6")


@pytest.mark.parametrize(
    ("method", "params", "most"),
    [
        ("generateStrings", {"n": 128, "length": 32, "characters": ALPHANUMERIC}, 4457),
        ("generateStrings", {"n": 117, "length": 32, "characters": ALPHANUMERIC}, 4078),
        ("generateIntegers", {"n": 512, "min": 1, "max": 6}, 4096),
        # 44 picks from more than 256 values, then 256 picks of a byte or a pair of bytes.
        ("generateIntegers", {"n": 300, "min": 1, "max": 300, "replacement": False}, 1199),
        ("generateDecimalFractions", {"n": 500, "decimalPlaces": 14}, 4024),
        ("generateBlobs", {"n": 1, "size": 8 * 4096}, 4096),
    ],
)
def test_randomorg_draws_state_the_most_they_read(
    method: str, params: dict[str, Any], most: int
) -> None:
    assert prepare(method, params).most == most


def test_randomorg_sequences_are_bounded_together() -> None:
    draw = prepare(
        "generateIntegerSequences",
        {"n": 2, "length": [100, 5], "min": [-(10**9), 1], "max": [0, 6],
         "replacement": [True, False]},
    )  # fmt: skip
    assert draw.need == 8 * 100 + 5  # 5 picks of at most 6 values: a byte each at least
    parts = (integer_reads(100, -(10**9), 0), *shapes.sample_reads(6, 5))
    assert draw.most == draw.reads == read_bound(*parts) == 822
