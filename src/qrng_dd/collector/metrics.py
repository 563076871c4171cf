"""The collector's own metrics, written to a textfile (``QRNG_METRICS_TEXTFILE``).

The collector never listens (P1), so nothing can scrape it: node_exporter's textfile collector
(or a human) reads the file it rewrites every telemetry interval. The same counters travel to
the gateways in the telemetry, which is where dashboards usually read them.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

log = structlog.get_logger("qrng_dd.collector")


class CollectorMetrics:
    """The collector's counters and gauges, on a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.fetched = Counter(
            "qrng_collector_fetched_bytes", "Bytes fetched", ["appliance"], registry=r
        )
        self.fetch_errors = Counter(
            "qrng_collector_fetch_errors", "Fetch errors", ["appliance"], registry=r
        )
        self.pushed = Counter(
            "qrng_collector_pushed_bytes", "Entropy bytes delivered", ["gateway"], registry=r
        )
        self.push_errors = Counter(
            "qrng_collector_push_errors", "Failed push attempts", ["gateway"], registry=r
        )
        self.dropped = Counter(
            "qrng_collector_dropped_bytes", "Entropy bytes never delivered", ["reason"], registry=r
        )
        self.health = Gauge(
            "qrng_source_health", "1 healthy, 0.5 startup, 0 quarantined", ["appliance"],
            registry=r,
        )  # fmt: skip
        self.discarded = Counter(
            "qrng_collector_discarded_bytes",
            "Bytes of a source thrown away by a health or batch test (with the one held back)",
            ["appliance"],
            registry=r,
        )
        self.paused = Gauge(
            "qrng_collector_output_paused", "1 when too few sources are healthy", registry=r
        )
        self.buffered = Gauge(
            "qrng_collector_buffer_bytes", "Bytes waiting in the outboxes", registry=r
        )


async def write_textfile(
    registry: CollectorRegistry, path: Path, interval_s: float, stop: anyio.Event
) -> None:
    """Rewrite ``path`` from ``registry`` every ``interval_s``, and once more at ``stop``.

    The file is replaced whole (written aside, then renamed), so a reader never sees half of it.
    """
    while True:
        try:
            write_to_textfile(str(path), registry)
        except OSError as err:
            log.warning("metrics_textfile_failed", path=str(path), error=str(err))
        if stop.is_set():
            return
        with anyio.move_on_after(interval_s):
            await stop.wait()
