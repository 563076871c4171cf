"""The client side: ``QuantumRandom.random()`` through the prefetching buffer, against
``random.SystemRandom`` (the kernel's CSPRNG) timed in the same run."""

from __future__ import annotations

import random
import time

from tests.support.gateway import stop

from bench.harness import Bench
from bench.plan import MIB
from bench.report import Row
from qrng_dd.client import Client, EntropyBuffer, QuantumRandom

__all__ = ["case_client"]


def _rate(draw: random.Random, calls: int) -> float:
    """``random()`` calls per second, one timed loop."""
    fn = draw.random
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return calls / (time.perf_counter() - start)


def case_client(b: Bench) -> None:
    calls = 100_000 if b.plan.quick else 1_000_000
    gateway = b.gateway(buffer_bytes=64 * MIB)
    b.fill(gateway, 7 * calls + 4 * MIB)  # 7 bytes a float, and the buffer's read-ahead
    system = _rate(random.SystemRandom(), calls)
    with Client(gateway.url, gateway.api_key) as client, EntropyBuffer(client, MIB) as buffer:
        quantum = _rate(QuantumRandom(buffer), calls)
    fetched = buffer.bytes_fetched
    b.report.details["client"] = {"calls": calls, "quantum_per_s": quantum,
                                  "system_per_s": system, "fetched": fetched}  # fmt: skip
    b.report.add(Row(f"client: QuantumRandom().random() x {calls:,} (1 MiB buffer)", "calls/s",
                     quantum, "calls/s", note=f"x SystemRandom {quantum / system:.2f} "
                     f"({system:,.0f} calls/s); fetched {fetched / MIB:.1f} MiB"))  # fmt: skip
    stop(gateway.proc)
