"""The shapes of the documents the gateway answers with: ``/health``, ``/api/status``.

Typed here once, so the service that builds them, the routes that send them and the MCP tools
that read them agree on every field; a field added to one is a type error in the others until
it is handled. The randomness report's shape lives beside its tests
(:class:`~qrng_dd.gateway.randomness.RandomnessReport`), the collector's telemetry beside the
wire format (:mod:`qrng_dd.wire.telemetry`).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

HealthState = Literal["healthy", "degraded", "unhealthy"]


class Health(TypedDict):
    """``GET /health``: for load balancers; 503 only when unhealthy."""

    status: HealthState
    buffer_fill_percent: float
    uptime_seconds: float
    warnings: list[str]


class Source(TypedDict):
    """One collector as the gateway sees it: its streams, and its last telemetry."""

    last_seq: int | None
    last_telemetry_seq: int | None
    last_packet_age_seconds: float
    packets_accepted: int
    sequence_gaps: int
    late_packets: int
    restarts: int
    loss_ratio: float
    telemetry_age_seconds: NotRequired[float]
    #: appliance name -> health state (``ok``, ``quarantined``, ...), from telemetry.
    appliances: NotRequired[dict[str, str]]
    #: The collector's last telemetry document as sent.
    telemetry: NotRequired[dict[str, Any]]


class StateInfo(TypedDict):
    """Where the sequence memory lives (P3 across restarts)."""

    dir: str | None
    remembers_previous_run: bool
    quiet_until_unix: float
    writes: int
    write_failures: int


class Status(TypedDict):
    """``GET /api/status``: the whole picture."""

    status: HealthState
    gateway_id: str
    buffer_fill_percent: float
    buffer_bytes_available: int
    buffer_capacity_bytes: int
    buffer_overflow_policy: str
    oldest_data_age_seconds: float
    uptime_seconds: float
    total_requests_served: int
    total_bytes_served: int
    bytes_dropped: int
    bytes_evicted: int
    link_up: bool
    last_packet_age_seconds: float | None
    state: StateInfo
    sources: dict[str, Source]
    #: ``collector/appliance`` names failing their health tests (P5), sorted.
    quarantined: list[str]
    rejected_packets: dict[str, int]
    warnings: list[str]
    #: Added by the route: the calling key's fingerprint and what is left of its limits.
    caller: NotRequired[dict[str, Any]]
