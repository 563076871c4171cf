"""Cases that measure the collector's CPU work in this process: health tests, batch tests,
mixing, and the false alarms of the tests on healthy bytes (P5)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from bench.harness import Bench
from bench.plan import KIB, MB, MIB
from bench.report import Row, verdict
from qrng_dd.collector.batchtests import BatchTester
from qrng_dd.collector.health import HealthMonitor
from qrng_dd.collector.mixing import mix

__all__ = ["case_cpu"]


def case_cpu(b: Bench) -> None:
    """In-process: the collector's per-byte cost of health tests and mixing, and the batch
    tests' false alarms over 1 GiB of healthy bytes (64 MiB with --quick)."""
    seconds = b.plan.cpu_seconds
    batches = [os.urandom(MIB) for _ in range(4)]

    def rate(fn: Callable[[bytes], int], size: int, blocks: Sequence[bytes]) -> float:
        done, n = 0, 0
        t0 = time.perf_counter()
        while True:
            done += fn(blocks[n % len(blocks)])
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and n >= 2:
                return done / elapsed / MB

    monitor = HealthMonitor(7.0)

    def health(batch: bytes) -> int:
        monitor.check(batch, time.monotonic())
        return len(batch)

    tester = BatchTester(40)

    def batch_tests(batch: bytes) -> int:
        tester.check(batch)  # the four batches recur: only the cost counts here
        return len(batch)

    small = [batch[: 64 * KIB] for batch in batches]
    figures = {
        "health (RCT+APT), 1 MiB batches": rate(health, MIB, batches),
        "batch tests, 1 MiB batches": rate(batch_tests, MIB, batches),
        "mix xor, 2 sources x 1 MiB": rate(
            lambda batch: len(mix([batch, batches[0]], "xor")), MIB, batches
        ),
        "mix hkdf, 2 sources x 64 KiB": rate(
            lambda batch: len(mix([batch, small[0]], "hkdf")), 64 * KIB, small
        ),
    }
    for name, value in figures.items():
        b.report.add(Row(f"collector cpu: {name}", "MB/s", value, "MB/s",
                         note=f"{1000 / value:.2f} ns/byte, output bytes"))  # fmt: skip
    b.report.details["cpu"] = figures
    # P5's other half: a healthy source is never quarantined. Fresh bytes, 4 KiB batches
    # (the default fetch size) through both kinds of test at the default alpha.
    total = (64 if b.plan.quick else 1024) * MIB
    monitor, tester = HealthMonitor(7.0), BatchTester(40)
    alarms = 0
    for _ in range(total // MIB):
        chunk = os.urandom(MIB)
        for start in range(0, MIB, 4 * KIB):
            batch = chunk[start : start + 4 * KIB]
            healthy = monitor.check(batch, 0.0).failed_test is None
            alarms += not healthy or tester.check(batch) is not None
            if not healthy:
                monitor.reset()
    b.report.add(Row("collector: false alarms on healthy bytes", f"{total // MIB} MiB",
                     alarms, "alarms", target="0", verdict=verdict(alarms == 0),
                     note="RCT+APT and batch tests at 2^-40, 4 KiB batches"))  # fmt: skip
    b.report.details["false_alarms"] = {"bytes": total, "alarms": alarms}
