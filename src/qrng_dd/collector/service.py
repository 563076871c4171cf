"""The collector process: fetch → health-test → mix → sign/encrypt → push. It never listens (P1).

Theory of operation (DESIGN §6): :class:`Collector` wires the pure core to the network and
the clock, and owns every client and socket it uses (``async with Collector(settings)``).

- **Fetch loop.** Every ``QRNG_FETCH_INTERVAL_MS`` it fetches the sources that
  :class:`~qrng_dd.collector.schedule.Schedule` says are due, in parallel, each under its own
  timeout, then lets the schedule test, hold and mix the batches. The mixed output goes whole
  to one target's outbox (:mod:`qrng_dd.collector.outbox`).
- **One sender per target** takes bytes from its outbox, packs them once
  (:mod:`qrng_dd.collector.packets`) and delivers the packet through the target's transport,
  at most once (:mod:`qrng_dd.collector.push`).
- **One heartbeat per target** sends telemetry every ``QRNG_TELEMETRY_INTERVAL_S`` on its own
  task and sequence (and, for UDP, its own socket), whatever becomes of the data.
- **Stop.** On SIGTERM/SIGINT fetching stops, the outboxes get :data:`FLUSH_SECONDS` to drain
  (final flush), one last heartbeat tells each gateway the last data seq, then the process exits.
  What is left in the outboxes is counted as expired.
"""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import httpx
import structlog

from qrng_dd.addresses import PushTarget
from qrng_dd.collector import clients
from qrng_dd.collector.batchtests import BatchTester
from qrng_dd.collector.health import HealthMonitor, SourceState
from qrng_dd.collector.metrics import CollectorMetrics, write_textfile
from qrng_dd.collector.outbox import FanOut
from qrng_dd.collector.packets import PacketBuilder
from qrng_dd.collector.push import Delivery, HttpTransport, Pacer, Transport, UdpTransport
from qrng_dd.collector.schedule import OutputState, Round, Schedule, SourceSlot
from qrng_dd.collector.sources import SourceError, open_source
from qrng_dd.config import CollectorSettings
from qrng_dd.wire.telemetry import Telemetry

log = structlog.get_logger("qrng_dd.collector")

#: How long SIGTERM waits for the outboxes to drain.
FLUSH_SECONDS = 5.0
_HEALTH_GAUGE = {SourceState.HEALTHY: 1.0, SourceState.STARTUP: 0.5}


class Collector:
    """One collector process's state and tasks. Use ``async with``, then :meth:`run`."""

    def __init__(
        self,
        settings: CollectorSettings,
        *,
        appliance_client: httpx.AsyncClient | None = None,
        push_client: httpx.AsyncClient | None = None,
    ) -> None:
        """
        Args:
            settings: the collector's configuration.
            appliance_client: the client for ``http(s)://`` appliances; built from
                ``settings`` if not given. Either way the collector closes it.
            push_client: the client for HTTP(S) gateways, likewise.
        """
        self.settings = settings
        self.metrics = CollectorMetrics()
        self._appliance_client = appliance_client or clients.appliance_client(settings)
        self._push_client = push_client or clients.push_client(settings)
        self.schedule = Schedule(
            [
                SourceSlot(
                    open_source(url, self._appliance_client),
                    HealthMonitor(
                        settings.claimed_entropy_bits, alpha_log2=settings.health_alpha_log2
                    ),
                    BatchTester(settings.health_alpha_log2),
                )
                for url in settings.appliance_urls
            ],
            min_sources=settings.min_sources,
            mixing=settings.mixing,
            retry_base_s=settings.fetch_interval_ms / 1000,
        )
        self.targets = settings.targets
        ids = [t.gateway_id for t in self.targets]
        self.outboxes = FanOut(ids, settings.collector_buffer_size)
        self.packets = PacketBuilder(
            settings.packet_key(), settings.collector_id, ids, encrypt=settings.encrypt_payload
        )
        self.pushed = dict.fromkeys(ids, 0)
        self.dropped: dict[str, int] = {"buffer_full": 0, "refused": 0, "expired": 0}
        #: Set while a target's outbox holds bytes; its sender waits on it.
        self._ready = {gateway_id: anyio.Event() for gateway_id in ids}
        #: Set when a sender empties an outbox; the final flush waits on it.
        self._emptied = anyio.Event()
        self._deliveries: dict[str, Delivery] = {}
        self._heartbeats: dict[str, Transport] = {}
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        """Open the push transports (the UDP sockets); on exit close them and both clients."""
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._appliance_client.aclose)
            stack.push_async_callback(self._push_client.aclose)
            for target in self.targets:
                self._open_transports(target, stack)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _open_transports(self, target: PushTarget, stack: AsyncExitStack) -> None:
        gid = target.gateway_id

        def on_error() -> None:
            self.metrics.push_errors.labels(gid).inc()

        data: Transport
        if target.scheme == "udp":
            pacer = Pacer(self.settings.udp_max_bitrate / 8)  # bytes per second
            udp = UdpTransport(target, self.settings.udp_payload_bytes, pacer=pacer,
                               on_error=on_error)  # fmt: skip
            stack.callback(udp.close)
            # Heartbeats get a socket of their own, unpaced: a long data burst cannot delay
            # them. A lost heartbeat is not counted as a push error; the next one follows.
            beat = UdpTransport(target, self.settings.udp_payload_bytes)
            stack.callback(beat.close)
            data, self._heartbeats[gid] = udp, beat
        else:
            data = self._heartbeats[gid] = HttpTransport(target, self._push_client, on_error)
        self._deliveries[gid] = Delivery(data)

    def telemetry(self, gateway_id: str) -> Telemetry:
        """The statistics one gateway is sent (no secret, no entropy)."""
        slots = self.schedule.slots
        return Telemetry(
            collector_id=self.settings.collector_id,
            uptime_seconds=self.packets.uptime(),
            mixing=self.settings.mixing,
            min_sources=self.settings.min_sources,
            sources_configured=len(slots),
            sources_contributing=self.schedule.contributing,
            output_paused=self.schedule.paused_reason is not None,
            paused_reason=self.schedule.paused_reason or "",
            health={s.name: s.monitor.state.value for s in slots},
            fetch_errors={s.name: s.fetch_errors for s in slots},
            fetched_bytes={s.name: s.fetched_bytes for s in slots},
            mixed_bytes={s.name: s.mixed_bytes for s in slots},
            discarded_bytes={s.name: s.discarded_bytes for s in slots},
            health_failures={s.name: s.monitor.failures for s in slots},
            pushed_bytes=self.pushed[gateway_id],
            data_seq=self.packets.settled(gateway_id),
            dropped_bytes=dict(self.dropped),
            buffered_bytes=len(self.outboxes[gateway_id]),
        )

    # -- fetching --------------------------------------------------------------------------

    async def _fetch_one(self, slot: SourceSlot, fetched: dict[SourceSlot, bytes]) -> None:
        try:
            with anyio.fail_after(self.settings.fetch_timeout_ms / 1000):
                data = await slot.source.fetch(self.settings.fetch_size)
        except (SourceError, TimeoutError) as err:
            detail = str(err) or "timed out"
            self.metrics.fetch_errors.labels(slot.name).inc()
            if self.schedule.fetch_failed(slot, detail):
                log.warning("fetch_failed", appliance=slot.name, error=detail,
                            errors_in_row=slot.errors_in_row)  # fmt: skip
            return
        if self.schedule.fetched(slot, data):
            log.info("fetch_recovered", appliance=slot.name)
        self.metrics.fetched.labels(slot.name).inc(len(data))
        fetched[slot] = data

    async def fetch_round(self) -> bytes:
        """One round: fetch, test, mix. Returns the mixed output (empty when paused)."""
        fetched: dict[SourceSlot, bytes] = {}
        async with anyio.create_task_group() as tg:
            for slot in self.schedule.due():
                tg.start_soon(self._fetch_one, slot, fetched)
        result = self.schedule.settle(fetched)
        self._report(result)
        return result.output

    def _report(self, result: Round) -> None:
        """Log and count what one round did."""
        for slot, verdict in result.verdicts:
            if verdict.failed_test is not None:
                self.metrics.discarded.labels(slot.name).inc(verdict.discarded)
                log.error(
                    "source_quarantined",
                    appliance=slot.name,
                    test=verdict.failed_test,
                    sample=verdict.failure_offset,
                    cooldown_s=round(verdict.cooldown_s, 1),
                    discarded_bytes=verdict.discarded,
                )
            elif verdict.new_state is not None:
                log.info("source_state", appliance=slot.name, state=verdict.new_state.value)
        for slot in self.schedule.slots:
            self.metrics.health.labels(slot.name).set(_HEALTH_GAUGE.get(slot.monitor.state, 0.0))
        if result.state is OutputState.PAUSED:
            if result.changed:
                log.warning("output_paused", reason=self.schedule.paused_reason)
            self.metrics.paused.set(1)
        elif result.state is OutputState.FLOWING:
            if result.changed:
                log.info("output_resumed", sources_contributing=self.schedule.contributing)
            self.metrics.paused.set(0)

    def distribute(self, output: bytes) -> None:
        """Queue ``output`` whole for one target (split fan-out), or drop and count it."""
        gid = self.outboxes.distribute(output)
        if gid is not None:
            self._ready[gid].set()
        elif output:
            self._drop("buffer_full", len(output))

    async def fetch_loop(self, stop: anyio.Event) -> None:
        interval = self.settings.fetch_interval_ms / 1000
        while not stop.is_set():
            started = anyio.current_time()
            self.distribute(await self.fetch_round())
            self.metrics.buffered.set(self.outboxes.buffered)
            with anyio.move_on_after(max(0.0, started + interval - anyio.current_time())):
                await stop.wait()

    # -- pushing ---------------------------------------------------------------------------

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] += n
        self.metrics.dropped.labels(reason).inc(n)

    async def _next_data(self, gateway_id: str, size: int, fetched: anyio.Event) -> bytes:
        """The next bytes to send to ``gateway_id``, or ``b""`` once fetching is over
        (``fetched`` is set) and nothing is left. Waiting for the fetch loop to end, not merely
        for the stop signal, is what lets the last round's bytes out in the final flush.
        """
        box = self.outboxes[gateway_id]
        while not len(box):
            if fetched.is_set():
                return b""
            async with anyio.create_task_group() as tg:

                async def _wake_when_fetched() -> None:
                    await fetched.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(_wake_when_fetched)
                await self._ready[gateway_id].wait()
                tg.cancel_scope.cancel()
        chunk = box.take(size)
        if not len(box):
            self._ready[gateway_id] = anyio.Event()
            self._emptied.set()
        return chunk

    async def push(self, target: PushTarget, fetched: anyio.Event, done: anyio.Event) -> None:
        """Push data to one gateway until ``done`` (set after the final flush)."""
        gid = target.gateway_id
        delivery = self._deliveries[gid]
        while not done.is_set():
            data = await self._next_data(gid, delivery.transport.chunk_size, fetched)
            if not data:
                return
            packet = self.packets.data(gid, data)
            outcome = await delivery.deliver(packet.raw, done)
            if outcome.delivered:
                self.pushed[gid] += len(data)
                self.metrics.pushed.labels(gid).inc(len(data))
            else:
                self._drop(outcome.value, len(data))  # "refused" or "expired", as labelled
            self.packets.settle(gid, packet.seq)

    async def heartbeat(self, target: PushTarget, done: anyio.Event) -> None:
        """Telemetry to one gateway every interval, on its own, whatever the data's fate.

        A full pool that makes data packets wait (507) or an outbox that never empties cannot
        delay it, so the gateway sees the link up as long as it is. Nothing is retried: the
        next one comes. One last heartbeat goes out after the final flush, so the gateway
        learns the last data ``seq`` (tail loss).
        """
        gid = target.gateway_id
        while True:
            await self._heartbeats[gid].send(self.packets.telemetry(gid, self.telemetry(gid)))
            if done.is_set():
                return
            with anyio.move_on_after(self.settings.telemetry_interval_s):
                await done.wait()

    async def _drained(self) -> None:
        """Wait until the senders have taken every byte from the outboxes."""
        while self.outboxes.buffered:
            await self._emptied.wait()
            self._emptied = anyio.Event()

    # -- running ---------------------------------------------------------------------------

    async def run(self, stop: anyio.Event) -> None:
        """Run until ``stop``; then flush the outboxes for up to :data:`FLUSH_SECONDS`.

        Raises:
            RuntimeError: the collector was not entered (``async with``) first.
        """
        if self._stack is None:
            msg = "enter the collector first: async with Collector(settings) as collector"
            raise RuntimeError(msg)
        fetched = anyio.Event()  # the fetch loop has returned: nothing more will be queued
        done = anyio.Event()  # the final flush is over: senders give up on what is left
        log.info(
            "collector_started",
            collector_id=self.settings.collector_id,
            appliances=[s.name for s in self.schedule.slots],
            gateways=[t.gateway_id for t in self.targets],
            mixing=self.settings.mixing,
            min_sources=self.settings.min_sources,
            encrypt=self.settings.encrypt_payload,
        )
        try:
            async with anyio.create_task_group() as tg:
                for target in self.targets:
                    tg.start_soon(self.push, target, fetched, done)
                    tg.start_soon(self.heartbeat, target, done)
                if (path := self.settings.metrics_textfile) is not None:
                    interval = self.settings.telemetry_interval_s
                    tg.start_soon(write_textfile, self.metrics.registry, path, interval, stop)
                await self.fetch_loop(stop)
                fetched.set()
                with anyio.move_on_after(FLUSH_SECONDS):
                    await self._drained()
                done.set()
        finally:
            left = self.outboxes.buffered
            if left:
                self._drop("expired", left)
            log.info("collector_stopped", pushed_bytes=self.pushed, undelivered_bytes=left)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML file (section collector:); env wins"
    )


def run(args: argparse.Namespace) -> int:
    """``qrng-dd collector``."""
    return run_collector(args.config)


def run_collector(config_file: Path | None) -> int:
    """``qrng-dd collector``. Raises: ConfigError (printed as one line by the CLI)."""
    import signal

    from qrng_dd import logs
    from qrng_dd.config import load

    settings = load(CollectorSettings, config_file=config_file)
    logs.configure(settings.log_format, settings.log_level)

    async def main() -> None:
        stop = anyio.Event()
        async with Collector(settings) as collector, anyio.create_task_group() as tg:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("signal", signal=signal.Signals(signum).name)
                        stop.set()
                        return

            tg.start_soon(on_signal)
            await collector.run(stop)
            tg.cancel_scope.cancel()

    anyio.run(main, backend_options={"use_uvloop": True})
    return 0
