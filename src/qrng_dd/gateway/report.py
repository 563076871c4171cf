"""The gateway's documents about itself: ``/health`` and ``/api/status`` (typed in
:mod:`qrng_dd.gateway.documents`), built from an :class:`EntropyService`'s state.

Kept apart from the service, which moves bytes: these only read, and every field an operator
or a model sees is decided here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qrng_dd.gateway.documents import Health, HealthState, Source, StateInfo, Status
from qrng_dd.gateway.service import health_map

if TYPE_CHECKING:
    from qrng_dd.gateway.service import EntropyService

HEALTHY_FILL = 30.0
DEGRADED_FILL = 10.0


def sources(service: EntropyService, now: float) -> dict[str, Source]:
    """Each collector's streams as the verifier saw them, and its last telemetry."""
    out: dict[str, Source] = {}
    for name, state in service.verifier.sources.items():
        entry: Source = {
            "last_seq": state.last_seq,
            "last_telemetry_seq": None if state.telemetry is None else state.telemetry.seq,
            "last_packet_age_seconds": round(max(0.0, now - state.last_seen), 3),
            "packets_accepted": state.accepted,
            "sequence_gaps": state.gaps,
            "late_packets": state.late,
            "restarts": state.restarts,
            "loss_ratio": round(state.gaps / (state.gaps + state.accepted), 6)
            if state.accepted
            else 0.0,
        }
        t = service.telemetry.get(name)
        if t is not None:
            entry["telemetry_age_seconds"] = round(max(0.0, now - t.received), 3)
            entry["appliances"] = health_map(t.stats)
            entry["telemetry"] = t.stats
        out[name] = entry
    return out


def warnings(service: EntropyService, now: float | None = None) -> list[str]:
    """Human-readable reasons this gateway is not at its best."""
    now = service.clock() if now is None else now
    out: list[str] = []
    fill = service.pool.fill_percent
    if fill < DEGRADED_FILL:
        out.append(f"pool critically low: {fill:.1f}% full")
    elif fill < HEALTHY_FILL:
        out.append(f"pool low: {fill:.1f}% full")
    if service.last_packet_at is None:
        out.append("no packet received yet")
    elif not service.link_up(now):
        out.append(f"link down: no packet for {now - service.last_packet_at:.0f} s")
    if service.state_dir is None:
        out.append("no QRNG_STATE_DIR: after a restart, replays are refused by creation time alone")
    if now < service.verifier.quiet_until:
        out.append(
            f"quiet start: packets created before the start plus the allowed clock skew "
            f"are refused for {service.verifier.quiet_until - now:.0f} s more "
            "(no sequence memory of an earlier run)"
        )
    out += [f"source {name} is quarantined" for name in quarantined(service)]
    for source, t in service.telemetry.items():
        if t.stats.get("output_paused"):
            out.append(f"collector {source} is not pushing: {t.stats.get('paused_reason')}")
    return out


def quarantined(service: EntropyService) -> list[str]:
    """``collector/appliance`` names whose collector reports them quarantined (P5)."""
    return sorted(
        f"{source}/{appliance}"
        for source, t in service.telemetry.items()
        for appliance, state in health_map(t.stats).items()
        if state == "quarantined"
    )


def health(service: EntropyService) -> tuple[int, Health]:
    """(HTTP status, body) for ``/health``: 503 only when unhealthy (< 10 % full).

    A link that is down makes a full pool ``degraded``: the pool drains with nothing
    coming in, and an operator must hear of it before it is empty.
    """
    fill = service.pool.fill_percent
    status: HealthState
    if fill < DEGRADED_FILL:
        status = "unhealthy"
    elif fill < HEALTHY_FILL or not service.link_up():
        status = "degraded"
    else:
        status = "healthy"
    body: Health = {
        "status": status,
        "buffer_fill_percent": round(fill, 3),
        "uptime_seconds": round(service.clock() - service.started, 3),
        "warnings": warnings(service),
    }
    return (503 if status == "unhealthy" else 200), body


def status(service: EntropyService) -> Status:
    """The full ``/api/status`` document."""
    now = service.clock()
    _, overall = health(service)
    return {
        "status": overall["status"],
        "gateway_id": service.settings.gateway_id,
        "buffer_fill_percent": overall["buffer_fill_percent"],
        "buffer_bytes_available": service.pool.available,
        "buffer_capacity_bytes": service.pool.capacity,
        "buffer_overflow_policy": service.pool.policy,
        "oldest_data_age_seconds": round(service.pool.oldest_age(), 3),
        "uptime_seconds": overall["uptime_seconds"],
        "total_requests_served": service.requests_served,
        "total_bytes_served": service.pool.taken_total,
        "bytes_dropped": service.pool.dropped_total,
        "bytes_evicted": service.pool.evicted_total,
        "link_up": service.link_up(now),
        "last_packet_age_seconds": None
        if service.last_packet_at is None
        else round(max(0.0, now - service.last_packet_at), 3),
        "state": state(service),
        "sources": sources(service, now),
        "quarantined": quarantined(service),
        "rejected_packets": {str(reason): n for reason, n in service.rejected.items()},
        "warnings": overall["warnings"],
    }


def state(service: EntropyService) -> StateInfo:
    """Where the sequence memory lives and whether it covers packets from before the start."""
    return {
        "dir": None if service.state_dir is None else str(service.state_dir.directory),
        "remembers_previous_run": service.verifier.remembers,
        "quiet_until_unix": round(service.verifier.quiet_until, 3),
        "writes": 0 if service.journal is None else service.journal.writes,
        "write_failures": 0 if service.journal is None else service.journal.failures,
    }
