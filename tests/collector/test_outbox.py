"""The outboxes and split fan-out: pure, so every case is exact."""

from __future__ import annotations

import pytest

from qrng_dd.collector.outbox import MIN_SHARE_BYTES, FanOut, Outbox


def test_an_outbox_hands_out_its_bytes_in_order_and_in_pieces() -> None:
    """take(n) returns the oldest n bytes and frees their room."""
    box = Outbox(10)
    box.add(b"abc")
    box.add(b"defg")
    assert (len(box), box.free) == (7, 3)
    assert box.take(5) == b"abcde"
    assert box.take(5) == b"fg"
    assert box.take(5) == b""
    assert (len(box), box.free) == (0, 10)


def test_the_buffer_is_shared_equally_with_a_floor_per_target() -> None:
    """Each target gets budget / targets, but never less than MIN_SHARE_BYTES."""
    assert FanOut(["a", "b", "c", "d"], 4096)["a"].capacity == 1024
    assert FanOut(["a", "b"], 1_048_576)["b"].capacity == 524_288
    assert FanOut(["a", "b", "c"], 1024)["c"].capacity == MIN_SHARE_BYTES


def test_a_batch_goes_whole_to_the_outbox_with_the_most_room() -> None:
    """The roomiest outbox takes the whole batch; the other gets none of it."""
    fan = FanOut(["a", "b"], 2000)
    fan["a"].add(b"x" * 100)
    assert fan.distribute(b"y" * 300) == "b"
    assert (len(fan["a"]), len(fan["b"])) == (100, 300)
    assert fan.distribute(b"z" * 50) == "a"
    assert fan["a"].take(1000) == b"x" * 100 + b"z" * 50
    assert fan.buffered == 300


def test_equally_roomy_outboxes_take_turns() -> None:
    """Ties go round-robin, so every target gets bytes even while none is full."""
    fan = FanOut(["a", "b", "c"], 3000)
    winners: list[str | None] = []
    for i in range(6):
        winners.append(fan.distribute(bytes([i]) * 10))
        for box in fan.boxes.values():
            box.take(10)  # every sender keeps up: all stay equally empty
    assert set(winners[:3]) == set(winners[3:]) == {"a", "b", "c"}


def test_a_batch_that_fits_no_outbox_is_dropped_whole() -> None:
    """No outbox with room for all of it: None, and nothing is queued anywhere."""
    fan = FanOut(["a", "b"], 2048)
    assert fan.distribute(b"x" * 1000) is not None
    assert fan.distribute(b"x" * 1000) is not None
    assert fan.distribute(b"x" * 100) is None
    assert fan.buffered == 2000
    assert fan.distribute(b"x" * 24) is not None  # what does fit still goes in
    assert fan.buffered == 2024


@pytest.mark.parametrize("targets", [["a"], ["a", "b"]])
def test_empty_output_goes_nowhere(targets: list[str]) -> None:
    """A paused round's empty output is neither queued nor a drop."""
    fan = FanOut(targets, 4096)
    assert fan.distribute(b"") is None
    assert fan.buffered == 0
