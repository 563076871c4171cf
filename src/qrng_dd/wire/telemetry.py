"""The telemetry document a collector sends each gateway (DESIGN §6). How it is typed and encoded.

A ``TELEMETRY`` packet carries one MessagePack map (:func:`encode_telemetry`) of counters and
states, never a byte of entropy and never a secret: it crosses the same link as the data and ends
up in the gateway's status page and metrics. The collector builds a :class:`Telemetry` and always
sends every field. A gateway must still read each field as possibly absent or of the wrong type
(:func:`decode_telemetry` returns an unchecked map): the peer may be an older or a newer
collector.

Maps keyed by appliance use the source's name (``host:port`` or the file path).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, TypedDict

import msgpack

from qrng_dd.errors import PacketError
from qrng_dd.wire.packet import unpack_bounded

#: Telemetry is a small map of counters; a bound keeps a compromised-but-keyed peer from
#: making the gateway build huge structures.
MAX_TELEMETRY_BYTES: Final = 65_536


class Telemetry(TypedDict):
    """One collector's statistics as one gateway receives them."""

    collector_id: str
    #: Seconds since the collector started (its sequences start there too).
    uptime_seconds: float
    mixing: str
    min_sources: int
    sources_configured: int
    #: Sources whose batches went into the last output.
    sources_contributing: int
    #: True when fewer than ``min_sources`` are healthy; ``paused_reason`` says why ("" if not).
    output_paused: bool
    paused_reason: str
    #: Per appliance: "healthy", "startup" or "quarantined".
    health: dict[str, str]
    fetch_errors: dict[str, int]
    fetched_bytes: dict[str, int]
    #: Per appliance: bytes that went into the output, and bytes a test threw away.
    mixed_bytes: dict[str, int]
    discarded_bytes: dict[str, int]
    health_failures: dict[str, int]
    #: Entropy bytes this gateway has accepted (a 409 replay counts: it got them before).
    pushed_bytes: int
    #: The last data seq whose fate is settled, so the gateway can count loss at the tail.
    data_seq: int
    #: Bytes never delivered, by reason: "buffer_full", "refused", "expired".
    dropped_bytes: dict[str, int]
    #: Bytes waiting in this gateway's outbox.
    buffered_bytes: int


def encode_telemetry(stats: Mapping[str, object]) -> bytes:
    """Serialise collector statistics (:class:`qrng_dd.wire.telemetry.Telemetry`)."""
    data: bytes = msgpack.packb(stats, use_bin_type=True)
    return data


def decode_telemetry(data: bytes) -> dict[str, Any]:
    """Parse a telemetry payload (authenticated already), bounded in size and shape.

    Raises:
        PacketError: ``malformed``.
    """
    if len(data) > MAX_TELEMETRY_BYTES:
        raise PacketError("malformed", "telemetry payload too large")
    stats = unpack_bounded(
        data, "telemetry", max_array_len=1024, max_map_len=1024, max_str_len=4096
    )
    if not isinstance(stats, dict):
        raise PacketError("malformed", "telemetry is not a map")
    kept: dict[str, Any] = _json_safe(stats)
    return kept


_DROPPED: Final = object()


def _json_safe(value: Any) -> Any:
    """``value`` without what JSON cannot carry: bin, NaN and infinities, keys that are not
    strings. The map ends up verbatim in ``/api/status``; what a newer (or broken) collector
    sends beyond JSON is dropped here rather than turned into a 500 on every status request.
    """
    if isinstance(value, dict):
        return {
            key: kept
            for key, item in value.items()
            if isinstance(key, str) and (kept := _json_safe(item)) is not _DROPPED
        }
    if isinstance(value, list):
        return [kept for item in value if (kept := _json_safe(item)) is not _DROPPED]
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROPPED
    if value is None or isinstance(value, (str, int)):
        return value
    return _DROPPED
