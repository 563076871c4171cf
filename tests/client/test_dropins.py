"""The drop-ins against a real gateway: ``QuantumRandom`` under the standard library's own
tests for ``random.Random`` subclasses, and a numpy ``Generator`` on quantum bits."""

from __future__ import annotations

import math
import pickle
import unittest
from collections.abc import Iterator

import numpy as np
import pytest
from test import test_random as stdlib_tests  # CPython's own suite for random

from qrng_dd.client import (
    Client,
    EntropyBuffer,
    EntropyUnavailableError,
    QuantumRandom,
    quantum_generator,
    seed_sequence,
)
from tests.support.gateway import RunningGateway, push_packets, start_gateway

#: 10^6 uniforms take 8 MB; the stdlib suite a few hundred kB.
POOL = 16 * 2**20


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    with start_gateway({"QRNG_BUFFER_SIZE": str(POOL)}) as gateway:
        yield gateway


def _fill(gw: RunningGateway, megabytes: int) -> None:
    """Top the pool up to at least ``megabytes``."""
    missing = megabytes * 2**20 - gw.status()["buffer_bytes_available"]
    if missing > 0:
        push_packets(gw.url, gw.key, -(-missing // 65536), 65536)


class TestQuantumRandomAsTheStandardLibraryTestsSystemRandom(
    stdlib_tests.SystemRandom_TestBasicOps  # type: ignore[misc]
):
    """CPython's ``SystemRandom`` tests, run on :class:`QuantumRandom`: ranges, 53-bit
    floats, ``choice`` on an empty sequence, ``sample`` without replacement, ``shuffle``,
    ``choices``, ``gauss``, ``getrandbits``, ``randbytes``, ``randrange`` edge cases. Only the
    tests that call ``seed`` expect our refusal instead of SystemRandom's silent no-op."""

    gen: QuantumRandom

    @pytest.fixture(autouse=True)
    def _quantum(self, gw: RunningGateway) -> Iterator[None]:
        _fill(gw, 1)
        with Client(gw.url, gw.api_key) as client:
            self.gen = QuantumRandom(EntropyBuffer(client))
            yield
            self.gen.buffer.close()

    def test_autoseed(self) -> None:
        with pytest.raises(NotImplementedError, match="cannot be replayed"):
            self.gen.seed()

    def test_seedargs(self) -> None:
        with pytest.raises(NotImplementedError):
            self.gen.seed(100)

    def test_seed_no_mutate_bug_44018(self) -> None:
        with pytest.raises(NotImplementedError):
            self.gen.seed(bytearray(b"1234"))

    def test_seed_when_randomness_source_not_found(self) -> None:
        self.test_seedargs()

    def test_gauss(self) -> None:
        values = [self.gen.gauss(10.0, 2.0) for _ in range(2000)]
        mean = sum(values) / len(values)
        assert abs(mean - 10.0) < 6 * 2.0 / math.sqrt(len(values))

    def test_pickling(self) -> None:
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(NotImplementedError):
                pickle.dumps(self.gen, proto)


def test_the_stdlib_suite_is_really_run() -> None:
    """Guard: the class above keeps finding CPython's tests (a rename would empty it)."""
    names = unittest.TestLoader().getTestCaseNames(
        TestQuantumRandomAsTheStandardLibraryTestsSystemRandom
    )
    assert len(names) >= 30
    assert {"test_sample", "test_choice", "test_randbytes", "test_53_bits_per_float"} <= set(names)


def test_randbytes_are_the_bytes_the_gateway_served(gw: RunningGateway) -> None:
    """Through a buffer as large as the draw: the bytes are the pushed stream's, in order, and
    /api/status counts exactly what the buffer fetched."""
    with Client(gw.url, gw.api_key, max_wait=0) as client:
        while (left := gw.status()["buffer_bytes_available"]) > 0:
            client.random_bytes(min(left, 65536))
        pushed = b"".join(push_packets(gw.url, gw.key, 4, 1024))
        before = gw.status()["total_bytes_served"]
        with EntropyBuffer(client, 4096, low_watermark=0) as buffer:
            qr = QuantumRandom(buffer)
            data = qr.randbytes(1000) + qr.randbytes(3096)
            fetched = buffer.bytes_fetched
    assert data == pushed[:4096]
    assert gw.status()["total_bytes_served"] - before == fetched == 4096


def test_seed_and_state_refuse_with_a_clear_error(gw: RunningGateway) -> None:
    with Client(gw.url, gw.api_key) as client:
        qr = QuantumRandom(client)
        for call in (qr.seed, qr.getstate, lambda: qr.setstate(None)):
            with pytest.raises(NotImplementedError, match="cannot be replayed"):
                call()
        qr.buffer.close()


def _ks_p_value(sample: np.ndarray) -> float:
    """Kolmogorov-Smirnov against U(0,1): asymptotic p-value of sqrt(n) D (Kolmogorov's
    series, accurate for n this large)."""
    x = np.sort(sample)
    n = x.size
    ranks = np.arange(1, n + 1) / n
    d = max(float((ranks - x).max()), float((x - (ranks - 1 / n)).max()))
    t = math.sqrt(n) * d
    return min(
        1.0, 2 * math.fsum((-1) ** (k - 1) * math.exp(-2 * k * k * t * t) for k in range(1, 101))
    )


def test_a_numpy_generator_on_quantum_bits_is_uniform(gw: RunningGateway) -> None:
    _fill(gw, 9)
    with Client(gw.url, gw.api_key) as client, EntropyBuffer(client, 262_144) as buffer:
        gen = quantum_generator(buffer)
        uniforms = gen.random(10**6)
        normals = gen.normal(size=1000)
    assert isinstance(gen, np.random.Generator)
    assert _ks_p_value(uniforms) > 1e-6
    assert normals.std() > 0.5
    assert buffer.bytes_drawn >= 8 * 10**6


def test_a_numpy_generator_raises_when_the_gateway_cannot_serve(gw: RunningGateway) -> None:
    """randomgen swallows a callback's exception; the generator re-raises it from the call."""
    with Client(gw.url, gw.api_key, max_wait=0) as client:
        while (left := gw.status()["buffer_bytes_available"]) > 0:
            client.random_bytes(min(left, 65536))
        with EntropyBuffer(client, 8192) as buffer:
            gen = quantum_generator(buffer)
            with pytest.raises(EntropyUnavailableError):
                gen.random(10)


def test_seed_sequence_takes_quantum_bits_and_replays(gw: RunningGateway) -> None:
    _fill(gw, 1)
    with Client(gw.url, gw.api_key) as client:
        seq = seed_sequence(client, 256)
        with pytest.raises(ValueError, match="128 bits"):
            seed_sequence(client, 64)
    assert isinstance(seq.entropy, int)
    assert 0 < seq.entropy < 2**256
    replay = np.random.SeedSequence(seq.entropy)
    a = np.random.default_rng(seq).random(5)
    b = np.random.default_rng(replay).random(5)
    assert (a == b).all()
