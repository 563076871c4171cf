"""The packet verifier: every check of DESIGN §3, in its order, with per-source state.

Pure and synchronous: the clock is injected, nothing here does I/O.

Order (the contract; each refusal is counted under its label):
``oversize`` → ``malformed`` (outer frame) → ``bad_mac`` → ``malformed`` (body) →
``wrong_dest`` → ``bad_crc`` → ``stale`` / ``future`` → ``replay`` → ``decrypt``.

Invariants:

- A packet's bytes are accepted at most once (P3): ``seq`` must be strictly above the last
  accepted ``seq`` of its source. Gaps are allowed (loss is real, most of all over UDP) and
  counted.
- Across a gateway restart, the sequence memory is gone; what protects P3 then is that a
  packet created before this verifier started (less the allowed clock skew) is ``stale``.
- Memory is bounded: a source silent for longer than TTL + skew is forgotten. That is safe
  because every packet it ever sent is by then older than the TTL, so a replay of any of them
  is refused as ``stale`` before the sequence check is needed.
- The sequence state advances only after decryption succeeded, so a packet that fails late
  cannot burn sequence numbers of the real stream.
- A collector starts its ``seq`` at its start time in microseconds and adds one per packet,
  so a running collector's ``seq`` can never run ahead of its clock by more than one per
  microsecond. A jump larger than the microseconds between the two packets' timestamps is
  therefore a collector restart, counted under ``restarts``, not as millions of lost packets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from qrng_dd import packet as wire
from qrng_dd.errors import PacketError, PoolFullError


@dataclass(slots=True)
class SourceState:
    """What the gateway remembers about one collector."""

    last_seq: int
    last_ts_us: int
    last_seen: float
    accepted: int = 0
    gaps: int = 0
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified packet and how many sequence numbers were skipped just before it."""

    packet: wire.Packet
    gap: int


class PacketVerifier:
    """Stateful verifier for one gateway id."""

    def __init__(
        self,
        key: wire.PacketKey,
        gateway_id: str,
        *,
        ttl_s: float = 300.0,
        skew_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._gateway_id = gateway_id
        self._ttl_us = int(ttl_s * 1_000_000)
        self._skew_us = int(skew_s * 1_000_000)
        self._forget_after_s = ttl_s + skew_s
        self._clock = clock
        self._started_us = int(clock() * 1_000_000)
        self.sources: dict[str, SourceState] = {}

    def verify(self, raw: bytes, admit: Callable[[wire.Packet], bool] | None = None) -> Accepted:
        """Run every check on an encoded packet and record it as accepted.

        ``admit`` is asked last, after decryption: when it says no, the packet is not
        recorded, so the identical packet may be sent again later (the pool was full).

        Raises:
            PacketError: with the reason label of the first check that failed.
            PoolFullError: ``admit`` declined the packet.
        """
        body_bytes, tag = wire.open_frame(raw)
        self._key.verify_tag(body_bytes, tag)
        body = wire.parse_body(body_bytes)
        if body.dest != self._gateway_id:
            raise PacketError("wrong_dest", f"packet is for {body.dest!r}")
        wire.check_crc(body)
        now = self._clock()
        now_us = int(now * 1_000_000)
        if body.ts_us > now_us + self._skew_us:
            raise PacketError("future", "created after now plus the allowed clock skew")
        if body.ts_us < now_us - self._ttl_us:
            raise PacketError("stale", "older than the packet TTL")
        if body.ts_us < self._started_us - self._skew_us:
            raise PacketError("stale", "created before this gateway started")
        state = self.sources.get(body.source)
        if state is not None and body.seq <= state.last_seq:
            raise PacketError("replay", f"seq {body.seq} is not above {state.last_seq}")
        opened = wire.open_body(body, self._key)
        if admit is not None and not admit(opened):
            raise PoolFullError("no room in the pool; send this packet again later")
        gap = 0
        if state is None:
            state = self.sources[body.source] = SourceState(body.seq, body.ts_us, now)
        else:
            gap = body.seq - state.last_seq - 1
            if gap > max(0, body.ts_us - state.last_ts_us):
                state.restarts += 1
                gap = 0
            state.gaps += gap
            state.last_seq = body.seq
            state.last_ts_us = body.ts_us
            state.last_seen = now
        state.accepted += 1
        return Accepted(opened, gap)

    def forget_idle(self) -> list[str]:
        """Drop sources silent for longer than TTL + skew; return their ids."""
        cutoff = self._clock() - self._forget_after_s
        idle = [name for name, state in self.sources.items() if state.last_seen < cutoff]
        for name in idle:
            del self.sources[name]
        return idle
