"""Gateway metrics (DESIGN §10): names are a contract, the seed's alert rules use them.

Each gateway owns a :class:`~prometheus_client.CollectorRegistry` (never the global one), so
tests and embedded instances never share counters. Values that already live elsewhere (the
pool's fill, the collectors' telemetry) are read at scrape time by a custom collector instead
of being copied on every change: the hot paths pay nothing for them.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from qrng_dd.errors import REJECT_REASONS

# The *_created series double every counter for no use to our alerts or dashboard.
disable_created_metrics()  # type: ignore[no-untyped-call]

if TYPE_CHECKING:
    from qrng_dd.gateway.pool import EntropyPool

#: Health states as gauge values: alert on ``== 0``; ``startup`` sits between.
HEALTH_VALUES = {"healthy": 1.0, "startup": 0.5, "quarantined": 0.0}

#: Latency buckets from 100 µs: the gateway answers small requests in well under 1 ms, and
#: the seed's own figures (3.6 ms P50, 9 ms P99) must fall inside the range too.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class RequestStats(Collector):
    """``qrng_requests_total`` and ``qrng_request_latency_seconds`` as plain numbers, turned
    into series at scrape time.

    A prometheus_client ``inc`` or ``observe`` takes a lock per call, and a request made four
    of them: a few microseconds of a small request's ~10. The gateway answers every request
    on its one event-loop thread (the pool needs no lock either), so plain ints are exact.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        #: Per endpoint: a count per latency bucket (the last for +Inf), then the sum.
        self._latency: dict[str, list[float]] = {}

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered request."""
        key = (endpoint, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        latency = self._latency.get(endpoint)
        if latency is None:
            latency = self._latency[endpoint] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
        latency[bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds
        latency[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "qrng_requests", "API requests by endpoint and status", labels=["endpoint", "status"]
        )
        for (endpoint, status), count in self._counts.items():
            requests.add_metric([endpoint, str(status)], float(count))
        yield requests
        latency = HistogramMetricFamily(
            "qrng_request_latency_seconds", "Request latency", labels=["endpoint"]
        )
        bounds = [*map(floatToGoString, _LATENCY_BUCKETS), "+Inf"]
        for endpoint, counts in self._latency.items():
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip(bounds, counts, strict=False):  # the sum is left out
                cumulative += in_bucket
                buckets.append((bound, cumulative))
            latency.add_metric([endpoint], buckets, counts[-1])
        yield latency


class SourceCounts(Collector):
    """``qrng_packets_accepted_total`` and ``qrng_bytes_received_total`` per source, plain
    ints turned into series at scrape time (the ingest path's share of :class:`RequestStats`'
    reasoning). A source's series stay once it was seen, as a counter's must."""

    def __init__(self) -> None:
        self.packets: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        packets = CounterMetricFamily(
            "qrng_packets_accepted", "Packets that passed every check", labels=["source"]
        )
        for source, count in self.packets.items():
            packets.add_metric([source], float(count))
        yield packets
        received = CounterMetricFamily(
            "qrng_bytes_received", "Entropy bytes received in accepted packets", labels=["source"]
        )
        for source, count in self.bytes.items():
            received.add_metric([source], float(count))
        yield received


class GatewayMetrics:
    """Every gateway metric, registered on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = RequestStats()
        r.register(self.requests)
        self.sources = SourceCounts()
        r.register(self.sources)
        self.packets_rejected = Counter(
            "qrng_packets_rejected", "Packets refused, by reason", ["reason"], registry=r
        )
        for reason in REJECT_REASONS:
            self.packets_rejected.labels(reason)
        self.bytes_dropped = Counter(
            "qrng_bytes_dropped",
            "Entropy bytes not pooled: overflow (discard policy), evicted (replace policy) or "
            "state (their seq could not be written to the state directory)",
            ["reason"],
            registry=r,
        )
        for cause in ("overflow", "evicted", "state"):
            self.bytes_dropped.labels(cause)
        self.sequence_gaps = Counter(
            "qrng_sequence_gaps", "Missing sequence numbers (lost packets)", ["source"],
            registry=r,
        )  # fmt: skip

    def watch(
        self,
        pool: EntropyPool,
        started: float,
        telemetry: Callable[[], dict[str, dict[str, Any]]],
        link: Callable[[], tuple[bool, float | None]] = lambda: (False, None),
    ) -> None:
        """Register the scrape-time view of the pool, the uptime, the link and the telemetry.

        ``link`` returns (up, seconds since the last packet or ``None``).
        """
        self.registry.register(_ScrapeCollector(pool, started, telemetry, link))


class _ScrapeCollector(Collector):
    def __init__(
        self,
        pool: EntropyPool,
        started: float,
        telemetry: Callable[[], dict[str, dict[str, Any]]],
        link: Callable[[], tuple[bool, float | None]],
    ) -> None:
        self._pool = pool
        self._started = started
        self._telemetry = telemetry
        self._link = link

    def collect(self) -> Iterator[Metric]:
        pool = self._pool
        yield GaugeMetricFamily(
            "qrng_buffer_fill_percent", "Pool fill, percent of capacity", pool.fill_percent
        )
        yield GaugeMetricFamily(
            "qrng_buffer_bytes_available", "Bytes in the pool", float(pool.available)
        )
        yield GaugeMetricFamily(
            "qrng_buffer_capacity_bytes", "Pool capacity in bytes", float(pool.capacity)
        )
        yield GaugeMetricFamily(
            "qrng_buffer_oldest_age_seconds", "Age of the oldest pooled byte", pool.oldest_age()
        )
        yield CounterMetricFamily(
            "qrng_bytes_served",
            "Entropy bytes taken from the pool for clients",
            float(pool.taken_total),
        )
        yield GaugeMetricFamily(
            "qrng_uptime_seconds", "Seconds since the gateway started", time.time() - self._started
        )
        up, age = self._link()
        yield GaugeMetricFamily(
            "qrng_link_up",
            "1 when a packet (data or heartbeat) arrived within three telemetry intervals",
            1.0 if up else 0.0,
        )
        if age is not None:
            yield GaugeMetricFamily(
                "qrng_last_packet_age_seconds", "Seconds since the last accepted packet", age
            )
        errors = CounterMetricFamily(
            "qrng_collector_fetch_errors",
            "Appliance fetch errors reported by collectors' telemetry",
            labels=["source", "appliance"],
        )
        health = GaugeMetricFamily(
            "qrng_source_health",
            "Appliance health from telemetry: 1 healthy, 0.5 startup, 0 quarantined",
            labels=["source", "appliance"],
        )
        for source, stats in self._telemetry().items():
            for appliance, count in _mapping(stats.get("fetch_errors")).items():
                if isinstance(count, (int, float)):
                    errors.add_metric([source, appliance], float(count))
            for appliance, state in _mapping(stats.get("health")).items():
                health.add_metric([source, appliance], HEALTH_VALUES.get(str(state), 0.0))
        yield errors
        yield health


def _mapping(value: object) -> dict[str, Any]:
    """Telemetry maps, defensively: a keyed-but-buggy collector must not break /metrics."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, (int, float, str))}
