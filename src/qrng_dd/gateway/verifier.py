"""The packet verifier: every check of DESIGN §3, in its order, with per-source state.

Pure and synchronous: the clock is injected, nothing here does I/O.

Order (the contract; each refusal is counted under its label):
``oversize`` → ``malformed`` (outer frame) → ``bad_mac`` → ``malformed`` (body) →
``wrong_dest`` → ``bad_crc`` → ``stale`` / ``future`` → ``replay`` → ``decrypt``.

Two phases, like the pool's ``Draw``: :meth:`PacketVerifier.check` runs every check and
changes nothing; :meth:`PacketVerifier.accept` records the packet once its caller has decided
to take it (the pool has room). A packet that is checked but never accepted (``507``, pool
full) may be sent again, identical, later.

Invariants:

- A packet's bytes are accepted at most once (P3): ``seq`` must be strictly above the last
  accepted ``seq`` of its source and stream. Data and telemetry are two streams with their
  own sequence, so a heartbeat is never held behind a data packet that waits for room (or
  refused because it overtook one). Gaps are allowed (loss is real, most of all over UDP)
  and counted.
- Across a gateway restart the sequence memory comes back from the state directory
  (``marks``, see :mod:`qrng_dd.gateway.state`). Without it, what protects P3 is that every
  packet whose timestamp could, under any clock difference the gateway accepts, mean it was
  created before this verifier started is ``stale``: ``ts < start + skew``. A collector
  ahead by d <= skew would be refused as ``future`` beyond that, so nothing created before
  the start can pass; the price is a quiet start of up to the allowed skew.
- Memory is bounded: a source silent for longer than TTL + skew is forgotten. That is safe
  because every packet it ever sent is by then older than the TTL, so a replay of any of them
  is refused as ``stale`` before the sequence check is needed.
- The sequence state advances only in :meth:`~PacketVerifier.accept`, after decryption, so a
  packet that fails late cannot burn sequence numbers of the real stream.
- A collector starts its ``seq`` at its start time in microseconds and adds one per packet,
  so within one life a ``seq`` stays below the timestamp of every later packet (catching up
  would take more than a packet per microsecond), while a new life starts above the
  timestamp of the old life's last packet. A ``seq`` above the last packet's ``ts_us`` is
  therefore a collector restart, counted under ``restarts``, not as millions of lost packets,
  however soon after its start the collector was killed.
- Tail loss: a heartbeat says which data ``seq`` the collector has finished sending
  (:meth:`~PacketVerifier.note_sent`); what it sent after the last packet that arrived is
  counted as lost at once, not only when a later packet shows the gap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from qrng_dd.errors import PacketError
from qrng_dd.wire import packet as wire


@dataclass(frozen=True, slots=True)
class SourceMark:
    """The high-water marks of one source, as the state directory keeps them."""

    seq: int
    ts_us: int
    telemetry_seq: int = 0


@dataclass(slots=True)
class Stream:
    """The last accepted packet of one stream (data or telemetry) of a source."""

    seq: int
    ts_us: int


@dataclass(slots=True)
class SourceState:
    """What the gateway remembers about one collector."""

    last_seen: float
    data: Stream | None = None
    telemetry: Stream | None = None
    #: Highest data seq accepted or already counted as lost (tail loss from heartbeats).
    accounted: int = 0
    accepted: int = 0
    gaps: int = 0
    restarts: int = 0
    #: Packets that arrived after a heartbeat had counted them lost (reordered, not lost).
    late: int = 0

    @property
    def last_seq(self) -> int | None:
        """The last accepted data ``seq``."""
        return None if self.data is None else self.data.seq

    def mark(self) -> SourceMark:
        """What the state directory keeps of this source."""
        data = self.data or Stream(0, 0)
        telemetry = self.telemetry or Stream(0, 0)
        return SourceMark(data.seq, max(data.ts_us, telemetry.ts_us), telemetry.seq)


@dataclass(frozen=True, slots=True)
class Verified:
    """A packet that passed every check (clear data), not yet recorded."""

    packet: wire.Packet


@dataclass(frozen=True, slots=True)
class Accepted:
    """A recorded packet and how many sequence numbers were skipped just before it."""

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
        marks: Mapping[str, SourceMark] | None = None,
    ) -> None:
        """``marks``: the high-water marks a previous instance left in the state directory.

        With marks (even none), the sequence memory survives restarts and packets created
        before the start are judged by ``seq`` like any other; without (``None``), they are
        refused as ``stale``.
        """
        self._key = key
        self._gateway_id = gateway_id
        self._ttl_us = int(ttl_s * 1_000_000)
        self._skew_us = int(skew_s * 1_000_000)
        self._forget_after_s = ttl_s + skew_s
        self._clock = clock
        now = clock()
        self._started_us = int(now * 1_000_000)
        self.remembers = marks is not None
        self._not_before_us = 0 if self.remembers else self._started_us + self._skew_us
        self.sources: dict[str, SourceState] = {}
        for name, m in (marks or {}).items():
            state = self.sources[name] = SourceState(now, accounted=m.seq)
            if m.seq:
                state.data = Stream(m.seq, m.ts_us)
            if m.telemetry_seq:
                state.telemetry = Stream(m.telemetry_seq, m.ts_us)

    @property
    def quiet_until(self) -> float:
        """Packets created before this time (on the gateway's clock) are refused as stale."""
        return self._not_before_us / 1_000_000

    def check(self, raw: bytes | memoryview) -> Verified:
        """Run every check on an encoded packet; record nothing.

        Raises:
            PacketError: with the reason label of the first check that failed.
        """
        body_bytes, tag = wire.open_frame(raw)
        self._key.verify_tag(body_bytes, tag)
        body = wire.parse_body(body_bytes)
        if body.dest != self._gateway_id:
            raise PacketError("wrong_dest", f"packet is for {body.dest!r}")
        wire.check_crc(body)
        now_us = int(self._clock() * 1_000_000)
        if body.ts_us > now_us + self._skew_us:
            raise PacketError("future", "created after now plus the allowed clock skew")
        if body.ts_us < now_us - self._ttl_us:
            raise PacketError("stale", "older than the packet TTL")
        if body.ts_us < self._not_before_us:
            raise PacketError("stale", "may have been created before this gateway started")
        self._check_seq(body.source, body.seq, bool(body.flags & wire.FLAG_TELEMETRY))
        return Verified(wire.open_body(body, self._key))

    def _check_seq(self, source: str, seq: int, telemetry: bool) -> None:
        state = self.sources.get(source)
        if state is None:
            return
        last = state.telemetry if telemetry else state.data
        if last is not None and seq <= last.seq:
            raise PacketError("replay", f"seq {seq} is not above {last.seq}")

    def accept(self, verified: Verified) -> Accepted:
        """Record a checked packet: its ``seq`` can never be accepted again.

        Raises:
            PacketError: ``replay``, if another packet with this ``seq`` was accepted since
                :meth:`check` (the caller awaited in between).
        """
        packet = verified.packet
        self._check_seq(packet.source, packet.seq, packet.telemetry)
        now = self._clock()
        state = self.sources.get(packet.source)
        if state is None:
            state = self.sources[packet.source] = SourceState(now)
        state.last_seen = now
        state.accepted += 1
        if packet.telemetry:
            last = state.telemetry
            gap = 0
            if last is not None:
                gap = self._count_gap(
                    last, packet.seq, packet.seq - last.seq - 1, state, counts_restart=False
                )
            state.telemetry = Stream(packet.seq, packet.ts_us)
            return Accepted(packet, gap)
        gap = 0
        if state.data is None:
            state.accounted = max(state.accounted, packet.seq)
        elif packet.seq <= state.accounted:
            state.late += 1  # counted lost by a heartbeat, arrived after all
        else:
            gap = self._count_gap(state.data, packet.seq, packet.seq - state.accounted - 1, state)
            state.accounted = packet.seq
        state.data = Stream(packet.seq, packet.ts_us)
        return Accepted(packet, gap)

    @staticmethod
    def _count_gap(
        last: Stream, seq: int, gap: int, state: SourceState, *, counts_restart: bool = True
    ) -> int:
        """Count ``gap`` missing packets before ``seq``, unless ``seq`` means a restart.

        A collector starts its sequences at its start time in microseconds and adds one per
        packet (DESIGN §3), so within one life a seq stays below the creation time of any
        later packet (it would take more than a packet per microsecond to catch up), and a
        new life's first seq is above the creation time of the old life's last packet: a seq
        past ``last.ts_us`` is a restart, whatever the time between the two packets. A
        restarted collector jumps both of its streams; only the data stream counts it, so
        one restart is one restart.
        """
        if seq > last.ts_us:
            if counts_restart:
                state.restarts += 1
            return 0
        state.gaps += gap
        return gap

    def verify(self, raw: bytes | memoryview) -> Accepted:
        """:meth:`check` then :meth:`accept`, for callers that always take the packet."""
        return self.accept(self.check(raw))

    def note_sent(self, source: str, data_seq: int) -> int:
        """A heartbeat says data up to ``data_seq`` was sent: count what never arrived.

        Returns:
            The packets newly counted as lost (tail loss).
        """
        state = self.sources.get(source)
        if state is None or state.data is None or data_seq <= state.accounted:
            return 0
        lost = self._count_gap(state.data, data_seq, data_seq - state.accounted, state)
        state.accounted = data_seq
        return lost

    def marks(self) -> dict[str, SourceMark]:
        """The high-water marks of every remembered source, for the state directory."""
        return {name: state.mark() for name, state in self.sources.items()}

    def forget_idle(self) -> list[str]:
        """Drop sources silent for longer than TTL + skew; return their ids."""
        cutoff = self._clock() - self._forget_after_s
        idle = [name for name, state in self.sources.items() if state.last_seen < cutoff]
        for name in idle:
            del self.sources[name]
        return idle
