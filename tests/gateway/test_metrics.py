"""The request series folded at scrape time read exactly as prometheus_client's own would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from qrng_dd.gateway.metrics import _LATENCY_BUCKETS, RequestStats


def test_request_stats_expose_what_a_counter_and_a_histogram_would() -> None:
    rng = random.Random(7)
    reference = CollectorRegistry()
    counter = Counter("qrng_requests", "API requests by endpoint and status",
                      ["endpoint", "status"], registry=reference)  # fmt: skip
    histogram = Histogram("qrng_request_latency_seconds", "Request latency", ["endpoint"],
                          buckets=_LATENCY_BUCKETS, registry=reference)  # fmt: skip
    folded = CollectorRegistry()
    stats = RequestStats()
    folded.register(stats)
    # Bounds themselves, values between them, zero and beyond the last bound.
    latencies = [*_LATENCY_BUCKETS, 0.0, 7.0] + [rng.uniform(0, 3) ** 4 for _ in range(2000)]
    for seconds in latencies:
        endpoint, status = rng.choice(["random", "uuid"]), rng.choice([200, 400, 503])
        counter.labels(endpoint, str(status)).inc()
        histogram.labels(endpoint).observe(seconds)
        stats.record(endpoint, status, seconds)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return sorted(line for line in text.splitlines() if "_created" not in line)

    assert lines(folded) == lines(reference)
