"""What one run does: the cases, their sizes and durations (full or ``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: The seed's figures (DESIGN §11): P50 and P99 in ms, burst throughput in req/s.
SEED: Final = {"p50_ms": 3.62, "p99_ms": 9.13, "req_s": 438.0}
MB: Final = 1_000_000
KIB: Final = 1024
MIB: Final = 1024 * 1024
HOST: Final = "127.0.0.1"
SMALL_PATHS: Final = (
    "/api/random?bytes=32",
    "/api/integers?count=10",
    "/api/floats?count=10",
    "/api/uuid",
)
BULK_PATH: Final = "/api/random?bytes=65536&encoding=binary"
BULK_BYTES: Final = 65_536
LATENCY_RATE: Final = 1000.0
#: Entropy bytes per datagram: a standard 1500-byte MTU, and a 9000-byte jumbo frame
#: (DESIGN's UDP target is for jumbo frames; docs/ONE-WAY.md has the size table).
UDP_PAYLOAD: Final = 1200
UDP_JUMBO_PAYLOAD: Final = 8800
CASES: Final = (
    "ceiling",
    "small",
    "latency",
    "accesslog",
    "bulk",
    "ingest",
    "e2e",
    "udp",
    "cpu",
    "rss",
    "granian",
    "client",
)


@dataclass
class Plan:
    """Durations and sizes of one run."""

    quick: bool
    wrk_seconds: int
    warmup_seconds: int
    connections: int
    threads: int
    latency_seconds: float
    latency_connections: int
    bulk_slices: int
    bulk_seconds: int
    main_pool_bytes: int
    ingest_seconds: float
    ingest_connections: int
    ingest_budget_bytes: int
    e2e_seconds: float
    e2e_appliances: int
    udp_rates_mb_s: list[float]
    udp_jumbo_rates_mb_s: list[float]
    udp_seconds: float
    cpu_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 2, 1, 32, 1, 3.0, 16, 1, 1, 512 * MIB, 1.5, 8, 64 * MIB, 4.0, 1,
                       [60.0], [100.0], 1.0, 0.2)  # fmt: skip
        return cls(False, 5, 1, 32, 1, 10.0, 16, 3, 1, 4096 * MIB, 3.0, 8, 768 * MIB, 10.0, 1,
                   [30.0, 60.0], [60.0, 100.0, 150.0], 3.0, 1.0)  # fmt: skip
