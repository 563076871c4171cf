"""The entropy pool: exact takes, both overflow policies, no byte twice (DESIGN §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qrng_dd.errors import EntropyExhaustedError
from qrng_dd.gateway.pool import EntropyPool


def test_take_returns_bytes_in_arrival_order() -> None:
    """FIFO across chunk boundaries."""
    pool = EntropyPool(100)
    pool.add(b"abc")
    pool.add(b"defg")
    assert pool.take(2) == b"ab"
    assert pool.take(3) == b"cde"
    assert pool.take(2) == b"fg"
    assert pool.available == 0


def test_short_take_raises_and_takes_nothing() -> None:
    """Asking for more than is there leaves the pool untouched."""
    pool = EntropyPool(100)
    pool.add(b"abc")
    with pytest.raises(EntropyExhaustedError):
        pool.take(4)
    assert pool.maybe_take(4) is None
    assert pool.take(3) == b"abc"


def test_discard_keeps_what_fits_and_counts_the_rest() -> None:
    """Under discard, overflow is dropped and counted."""
    pool = EntropyPool(1024)
    assert pool.add(b"a" * 1000) == 1000
    assert pool.add(b"b" * 100) == 24
    assert pool.dropped_total == 76
    assert pool.take(1024) == b"a" * 1000 + b"b" * 24


def test_replace_evicts_the_oldest_and_counts_it() -> None:
    """Under replace, the newest bytes stay and evictions are counted."""
    pool = EntropyPool(1024, "replace")
    pool.add(b"a" * 1000)
    pool.add(b"b" * 100)
    assert pool.evicted_total == 76
    assert pool.take(1024) == b"a" * 924 + b"b" * 100


def test_replace_with_a_packet_larger_than_the_pool_keeps_its_newest_bytes() -> None:
    """A packet bigger than capacity keeps its last capacity bytes."""
    pool = EntropyPool(1024, "replace")
    pool.add(bytes(range(256)) * 5)
    assert pool.available == 1024
    assert pool.take(1024) == (bytes(range(256)) * 5)[-1024:]


def test_oldest_age_follows_the_head_chunk() -> None:
    """Age is that of the oldest byte still pooled."""
    now = [100.0]
    pool = EntropyPool(1024, clock=lambda: now[0])
    assert pool.oldest_age() == 0.0
    pool.add(b"x" * 10)
    now[0] = 105.0
    pool.add(b"y" * 10)
    now[0] = 107.0
    assert pool.oldest_age() == 7.0
    pool.take(10)
    assert pool.oldest_age() == 2.0


def test_draw_removes_only_on_commit() -> None:
    """A read-ahead that is dropped leaves every byte in place."""
    pool = EntropyPool(1024)
    pool.add(b"0123456789")
    draw = pool.draw()
    assert draw.read(3) == b"012"
    assert draw.read(4) == b"3456"
    with pytest.raises(EntropyExhaustedError):
        draw.read(4)
    assert pool.available == 10
    draw2 = pool.draw()
    draw2.read(2)
    assert draw2.commit() == 2
    assert pool.take(8) == b"23456789"


def test_bad_construction_is_refused() -> None:
    """Zero capacity and unknown policies are refused."""
    with pytest.raises(ValueError, match="capacity"):
        EntropyPool(0)
    with pytest.raises(ValueError, match="policy"):
        EntropyPool(10, "keep")  # type: ignore[arg-type]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 300)),
        st.tuples(st.just("take"), st.integers(1, 300)),
        st.tuples(st.just("draw"), st.integers(1, 100)),
    ),
    max_size=60,
)


@given(ops, st.sampled_from(["discard", "replace"]))
def test_no_byte_position_is_ever_returned_twice(
    operations: list[tuple[str, int]], policy: str
) -> None:
    """Over any interleaving, every returned byte is a distinct byte that was put in."""
    pool = EntropyPool(1024, policy)  # type: ignore[arg-type]
    counter = 0
    seen: set[int] = set()
    for op, n in operations:
        if op == "add":
            # Each byte position is a unique 4-byte big-endian counter value.
            pool.add(b"".join((counter + i).to_bytes(4, "big") for i in range(n)))
            counter += n
            continue
        n4 = 4 * n
        if op == "draw":
            draw = pool.draw()
            try:
                out = draw.read(n4)
            except EntropyExhaustedError:
                continue
            assert draw.commit() == n4
        else:
            out = pool.maybe_take(n4) or b""
        assert pool.available <= pool.capacity
        # Whole 4-byte values survive only when aligned; alignment holds because every
        # add, take and eviction is a multiple of 4.
        for i in range(0, len(out), 4):
            value = int.from_bytes(out[i : i + 4], "big")
            assert value < counter
            assert value not in seen
            seen.add(value)
    assert pool.added_total == pool.taken_total + pool.evicted_total + pool.available
