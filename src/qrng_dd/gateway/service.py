"""The gateway's core, independent of HTTP: ingest, pool, derivations, status.

The REST routes, the UDP listener and the in-process MCP server all call this one object, so
every way in is verified the same way (P2) and every way out draws from the same pool with
the same accounting (P3).

Everything here is synchronous and runs on the gateway's single event loop: a call runs to
completion without interleaving, which is what makes a :class:`~qrng_dd.gateway.pool.Draw` atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from qrng_dd.config import GatewaySettings
from qrng_dd.errors import REJECT_REASONS, PacketError, PoolFullError, StateError
from qrng_dd.gateway import derive
from qrng_dd.gateway.metrics import GatewayMetrics
from qrng_dd.gateway.policy import Policy
from qrng_dd.gateway.pool import EntropyPool
from qrng_dd.gateway.state import StateDir, StateJournal
from qrng_dd.gateway.verifier import PacketVerifier
from qrng_dd.ratelimit import RateLimiter
from qrng_dd.wire.packet import Packet
from qrng_dd.wire.telemetry import decode_telemetry

log = structlog.get_logger("qrng_dd.gateway")


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one accepted packet."""

    source: str
    telemetry: bool
    accepted_bytes: int
    dropped_bytes: int
    gap: int


@dataclass(frozen=True, slots=True)
class Received:
    """An accepted packet on its way to the pool: ``generation`` is its state-journal entry."""

    packet: Packet
    gap: int
    generation: int


@dataclass(slots=True)
class Telemetry:
    """The latest statistics one collector sent, and when they arrived."""

    stats: dict[str, Any]
    received: float


class EntropyService:
    """Pool, verifier and metrics of one gateway."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self.pool = EntropyPool(settings.buffer_size, settings.buffer_overflow_policy)
        # The state directory (P3 across restarts): opened and locked before anything else,
        # so a bad one stops the gateway at start with one line naming QRNG_STATE_DIR.
        self.state_dir: StateDir | None = None
        marks = None
        if settings.state_dir is not None:
            self.state_dir = StateDir(settings.state_dir, settings.gateway_id)
            marks = self.state_dir.load()
        self.verifier = PacketVerifier(
            settings.packet_key(),
            settings.gateway_id,
            ttl_s=settings.packet_ttl_s,
            skew_s=settings.max_clock_skew_s,
            clock=clock,
            marks=marks,
        )
        self.journal = (
            StateJournal(self.state_dir, self.verifier.marks)
            if self.state_dir is not None
            else None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = metrics or GatewayMetrics()
        # Per-key buckets and the keys live here, not in the HTTP layer, so the REST routes,
        # the MCP mount and any later way out share one policy and one budget.
        self.limiter = RateLimiter(settings.rate_limit, settings.burst, settings.byte_rate_limit)
        self.policy = Policy(settings.api_keys, self.limiter)
        self.telemetry: dict[str, Telemetry] = {}
        self.metrics.watch(self.pool, self.started, self._telemetry_stats, self._link_metric)
        self.requests_served = 0
        #: /push bodies being read right now (bounded by ``QRNG_MAX_PUSH_BODIES``).
        self.push_bodies_reading = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._refusal_window: dict[str, tuple[int, int]] = {}
        self.last_packet_at: float | None = None
        self._last_forget = self.started
        # Labelled metric children, looked up once: ``labels()`` costs more than ``inc()``.
        # A source's children are made on first use, as before, so no zero series appears.
        m = self.metrics
        self._rejected_counters = {r: m.packets_rejected.labels(r) for r in REJECT_REASONS}
        self._overflow_counter = m.bytes_dropped.labels("overflow")
        self._evicted_counter = m.bytes_dropped.labels("evicted")
        self.state_dir_counter = m.bytes_dropped.labels("state")
        self._accepted = m.sources.packets
        self._received = m.sources.bytes

    def _log_refusal(self, err: PacketError, transport: str) -> None:
        # Every refusal is counted; the log gets the first of each reason per second plus a
        # count of the rest, so a flood of garbage datagrams cannot flood the log too.
        now = self.clock()
        second, suppressed = self._refusal_window.get(err.reason, (0, 0))
        if int(now) == second:
            self._refusal_window[err.reason] = (second, suppressed + 1)
            return
        self._refusal_window[err.reason] = (int(now), 0)
        log.warning(
            "packet_refused",
            reason=err.reason,
            detail=err.detail,
            transport=transport,
            suppressed_since_last=suppressed,
        )

    def _link_metric(self) -> tuple[bool, float | None]:
        now = self.clock()
        age = None if self.last_packet_at is None else max(0.0, now - self.last_packet_at)
        return self.link_up(now), age

    def _telemetry_stats(self) -> dict[str, dict[str, Any]]:
        return {source: t.stats for source, t in self.telemetry.items()}

    # -- ingest ---------------------------------------------------------------------------

    def refuse(self, err: PacketError, transport: str) -> None:
        """Count and log a refusal, also one found before :meth:`ingest` (an oversize body)."""
        counter = self._rejected_counters.get(err.reason)
        if counter is None:
            counter = self.metrics.packets_rejected.labels(err.reason)
        counter.inc()
        self.rejected[err.reason] += 1
        self._log_refusal(err, transport)

    def receive(self, raw: bytes | memoryview, transport: str, *, resendable: bool) -> Received:
        """Verify one encoded packet and record it as accepted; pool nothing yet.

        Telemetry is applied at once (it carries no entropy). ``resendable``: the sender can
        be told "later" and will send the identical packet again, so under ``discard`` a data
        packet that would find no room at all is not consumed (a full pool loses no entropy).

        Raises:
            PacketError: refused; counted under its reason and logged.
            PoolFullError: valid, but no room under ``discard``; not consumed.
        """
        try:
            verified = self.verifier.check(raw)
            packet = verified.packet
            if resendable and not packet.telemetry and self._no_room():
                raise PoolFullError("no room in the pool; send this packet again later")
            accepted = self.verifier.accept(verified)
        except PacketError as err:
            self.refuse(err, transport)
            raise
        now = self.clock()
        self.last_packet_at = now
        source = packet.source
        self._accepted[source] = self._accepted.get(source, 0) + 1
        if accepted.gap:
            self.metrics.sequence_gaps.labels(source).inc(accepted.gap)
        if now - self._last_forget > 60:
            self._last_forget = now
            for idle in self.verifier.forget_idle():
                self.telemetry.pop(idle, None)
        if packet.telemetry:
            self._telemetry_received(packet, now)
        generation = self.journal.changed() if self.journal is not None else 0
        return Received(packet, accepted.gap, generation)

    def _telemetry_received(self, packet: Packet, now: float) -> None:
        try:
            stats = decode_telemetry(packet.data)
        except PacketError as err:
            log.warning("telemetry_unreadable", source=packet.source, detail=err.detail)
            stats = {}
        self.telemetry[packet.source] = Telemetry(stats, now)
        sent = stats.get("data_seq")  # the last data seq the collector finished sending
        if type(sent) is int and (lost := self.verifier.note_sent(packet.source, sent)):
            self.metrics.sequence_gaps.labels(packet.source).inc(lost)

    def _no_room(self) -> bool:
        return self.pool.policy == "discard" and self.pool.free == 0

    def pool_bytes(self, received: Received) -> IngestResult:
        """Put an accepted data packet's bytes in the pool, counting what did not fit."""
        packet = received.packet
        if packet.telemetry:
            return IngestResult(packet.source, True, 0, 0, received.gap)
        evicted_before = self.pool.evicted_total
        kept = self.pool.add(packet.data)
        dropped = len(packet.data) - kept
        source = packet.source
        self._received[source] = self._received.get(source, 0) + len(packet.data)
        if dropped:
            self._overflow_counter.inc(dropped)
        if evicted := self.pool.evicted_total - evicted_before:
            self._evicted_counter.inc(evicted)
        return IngestResult(source, False, kept, dropped, received.gap)

    async def durable(self, received: Received) -> None:
        """Wait until the packet's ``seq`` is in the state directory (no-op without one).

        Telemetry waits too: a heartbeat acknowledged but not on disk would be accepted again
        after a crash, and its stale ``data_seq`` read as lost packets.

        Raises:
            StateError: the write failed; the packet's bytes are dropped and counted, never
                pooled, since nothing on disk would refuse their replay after a restart.
        """
        if self.journal is None:
            return
        try:
            await self.journal.durable(received.generation)
        except OSError as err:
            size = 0 if received.packet.telemetry else len(received.packet.data)
            self.state_dir_counter.inc(size)
            log.error("state_write_failed", state_dir=str(self.settings.state_dir),
                      error=str(err), dropped_bytes=size)  # fmt: skip
            raise StateError(str(err)) from None

    async def ingest(self, raw: bytes) -> IngestResult:
        """Verify, record durably, then pool: the whole way of one packet pushed over HTTP.

        The pusher can be answered "later" (507) and resends the identical packet, so under
        ``discard`` a data packet that finds no room is not consumed.

        Raises:
            PacketError, PoolFullError: see :meth:`receive`.
            StateError: see :meth:`durable`.
        """
        received = self.receive(raw, "http", resendable=True)
        await self.durable(received)
        return self.pool_bytes(received)

    def ingest_datagram(self, raw: bytes | memoryview) -> None:
        """A UDP datagram: nobody can be asked to resend, so what does not fit is dropped.

        With a state directory its bytes are pooled by a task once durable. ``raw`` may be a
        view of the receiver's reused buffer: nothing here keeps a reference to it.

        Raises:
            PacketError: refused; counted and logged.
        """
        received = self.receive(raw, "udp", resendable=False)
        if self.journal is None:
            self.pool_bytes(received)
            return
        task = asyncio.get_running_loop().create_task(self._pool_when_durable(received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pool_when_durable(self, received: Received) -> None:
        with contextlib.suppress(StateError):  # counted and logged
            await self.durable(received)
            self.pool_bytes(received)

    async def close(self) -> None:
        """Write the last marks and release the state directory (at shutdown)."""
        if self.journal is None or self.state_dir is None:
            return
        try:
            await self.journal.flush()
        except OSError as err:
            log.error("state_write_failed", state_dir=str(self.state_dir.directory), error=str(err))
        self.state_dir.close()

    # -- serving --------------------------------------------------------------------------

    def charge(self, key: str, nbytes: int = 0, *, request: bool = True) -> None:
        """Charge a request (unless ``request`` is false) and ``nbytes`` to ``key``'s limits,
        whatever way out it came by (a REST route, an MCP tool).

        Raises:
            Problem: 429; nothing was charged.
        """
        self.policy.admit(key, nbytes, request=request)

    def take(self, n: int) -> bytes:
        """Exactly ``n`` pool bytes. Raises: EntropyExhaustedError (nothing taken)."""
        data = self.pool.take(n)  # qrng_bytes_served_total is the pool's taken_total
        self.requests_served += 1
        return data

    def derive(self, fn: Callable[[derive.Reader], T]) -> T:
        """``fn(read)`` on one pool draw: the bytes it read are served if it returns, and
        none are taken if it raises (EntropyExhaustedError when the pool runs short)."""
        draw = self.pool.draw()
        result = fn(draw.read)  # raises EntropyExhaustedError before anything is removed
        draw.commit()
        self.requests_served += 1
        return result

    def integers(self, count: int, low: int, high: int) -> list[int]:
        """Uniform integers. Raises: EntropyExhaustedError (nothing taken)."""
        return self.derive(lambda read: derive.integers(read, count, low, high))

    def floats(self, count: int) -> list[float]:
        """Floats in [0, 1). Raises: EntropyExhaustedError (nothing taken)."""
        return self.derive(lambda read: derive.floats(read, count))

    def uuids(self, count: int) -> list[str]:
        """Version-4 UUIDs. Raises: EntropyExhaustedError (nothing taken)."""
        return self.derive(lambda read: derive.uuids(read, count))

    def monte_carlo(self, iterations: int) -> dict[str, object]:
        """The seed's pi estimate over ``iterations`` points of 16 bytes."""
        return derive.monte_carlo_pi(self.take(16 * iterations))

    # -- status ---------------------------------------------------------------------------

    def retry_after(self) -> int:
        """Seconds a client should wait: collectors push every 100 ms by default."""
        return 1

    def link_up(self, now: float | None = None) -> bool:
        """A packet (data or heartbeat) arrived within three telemetry intervals.

        Heartbeats travel on their own stream, whatever becomes of the data, so a full pool
        keeps the link up; a silent collector (or a cut link) takes it down.
        """
        now = self.clock() if now is None else now
        last = self.last_packet_at
        return last is not None and now - last <= 3 * self.settings.telemetry_interval_s


def health_map(stats: dict[str, Any]) -> dict[str, str]:
    health = stats.get("health")
    return {str(k): str(v) for k, v in health.items()} if isinstance(health, dict) else {}
