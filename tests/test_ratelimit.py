"""The token bucket's debt-taking side (`TokenBucket.reserve`); the limiter is in gateway/."""

from __future__ import annotations

import pytest

from qrng_dd.ratelimit import TokenBucket


def test_reserve_takes_tokens_into_debt_and_queues_callers() -> None:
    """Each reservation waits behind the debt of those before it; nothing is refused."""
    bucket = TokenBucket(rate=100.0, burst=10.0)
    assert bucket.reserve("a", 10.0, now=0.0) == 0.0
    assert bucket.reserve("a", 50.0, now=0.0) == pytest.approx(0.5)
    assert bucket.reserve("a", 50.0, now=0.0) == pytest.approx(1.0)
    assert bucket.reserve("b", 10.0, now=0.0) == 0.0


def test_reserve_debt_is_paid_back_by_time_and_seen_by_wait_for() -> None:
    """Time refills a bucket in debt, and wait_for sees the same debt."""
    bucket = TokenBucket(rate=100.0, burst=10.0)
    bucket.reserve("a", 60.0, now=0.0)
    assert bucket.wait_for("a", 1.0, now=0.0) == pytest.approx(0.51)
    assert bucket.wait_for("a", 1.0, now=0.51) == pytest.approx(0.0, abs=1e-9)
    assert bucket.reserve("a", 0.0, now=10.0) == 0.0
    assert bucket.left("a", now=10.0) == (10, 0)


def test_a_clock_stepping_backwards_refills_nothing() -> None:
    """A clock step backwards neither refills nor drains a bucket."""
    bucket = TokenBucket(rate=100.0, burst=10.0)
    bucket.reserve("a", 10.0, now=5.0)
    assert bucket.reserve("a", 0.0, now=1.0) == 0.0
    assert bucket.wait_for("a", 10.0, now=1.0) == pytest.approx(0.1)
