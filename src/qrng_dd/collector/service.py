"""The collector: fetch → health-test → mix → sign/encrypt → push. It never listens (P1).

Theory of operation (DESIGN §6):

- **Fetch.** Every ``QRNG_FETCH_INTERVAL_MS`` all eligible sources are fetched in parallel,
  each under its own timeout. A failing source backs off exponentially with jitter; the
  others go on.
- **Test, then hold.** Every batch goes through its source's SP 800-90B health monitor and the
  batch tests (bias, nibble and byte distribution, runs, repeats:
  :mod:`qrng_dd.collector.batchtests`) before anything else. A passing batch is held back until
  the source's *next* batch passes too, so a fault that starts inside a batch, too small a part
  of it to be seen there, still costs that batch. A failure discards the batch and the one held,
  and quarantines the source (P5): no byte of a source caught faulty reaches the output. The
  price is one batch of latency per source, and the last batch before a stop is never used.
- **Mix.** The healthy batches are mixed (``xor`` or ``hkdf``) only if at least
  ``QRNG_MIN_SOURCES`` of them are healthy; otherwise nothing is output and the telemetry says
  why. The count of contributing sources travels in every telemetry packet.
- **Fan out.** Each mixed batch goes whole to one target's outbox (the one with the most room),
  so with several gateways each gets different bytes (split fan-out), never the same ones.
  The outboxes share ``QRNG_COLLECTOR_BUFFER_SIZE``; when all are full, new output is dropped
  and counted.
- **Push, at most once per byte.** Each target has its own sequence, starting at this
  process's start time in microseconds. Bytes are packed into a packet once; a retry resends
  the identical packet (same seq, same id), which the gateway accepts at most once. After a
  ``409 replay`` (our earlier attempt got through but its answer was lost) the packet counts as
  delivered; after a permanent refusal, or once the packet is too old to be accepted, it is
  dropped and counted. Bytes are never re-sent under a new sequence.
- **UDP** targets get one packet per datagram, paced to ``QRNG_UDP_MAX_BITRATE``; the socket
  only sends.
- **Telemetry** packets every ``QRNG_TELEMETRY_INTERVAL_S`` carry the counters and the health
  states to each gateway; they double as heartbeats.
- **Stop.** On SIGTERM/SIGINT fetching stops, the outboxes get a few seconds to drain (final
  flush), then the process exits.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

from qrng_dd.collector.batchtests import BatchTester
from qrng_dd.collector.health import HealthMonitor, SourceState
from qrng_dd.collector.mixing import mix
from qrng_dd.collector.sources import Source, SourceError, open_source
from qrng_dd.config import CollectorSettings, PushTarget
from qrng_dd.wire import packet as wire

log = structlog.get_logger("qrng_dd.collector")

#: Largest clear payload per HTTP packet: the AEAD tag must still fit in 1 MiB of data.
HTTP_CHUNK = wire.MAX_DATA_BYTES - wire.AEAD_TAG_BYTES
#: How long SIGTERM waits for the outboxes to drain.
FLUSH_SECONDS = 5.0
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 10.0


def backoff_delay(attempt: int, base: float = _BACKOFF_MIN, cap: float = _BACKOFF_MAX) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


@dataclass(slots=True)
class SourceSlot:
    """One configured source and everything the collector tracks about it."""

    source: Source
    monitor: HealthMonitor
    batch_tests: BatchTester
    #: The last batch that passed, waiting for the next one to pass too.
    held: bytes | None = None
    fetched_bytes: int = 0
    #: Bytes of this source that went into the output, and that were thrown away by a test.
    mixed_bytes: int = 0
    discarded_bytes: int = 0
    fetch_errors: int = 0
    errors_in_row: int = 0
    retry_at: float = 0.0
    last_error: str | None = None


@dataclass(slots=True)
class Outbox:
    """The bytes waiting for one target, bounded."""

    capacity: int
    data: bytearray = field(default_factory=bytearray)
    ready: anyio.Event = field(default_factory=anyio.Event)
    drained: anyio.Event = field(default_factory=anyio.Event)

    @property
    def free(self) -> int:
        return self.capacity - len(self.data)

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        self.ready.set()
        if self.drained.is_set():
            self.drained = anyio.Event()

    def take(self, n: int) -> bytes:
        chunk = bytes(self.data[:n])
        del self.data[:n]
        if not self.data:
            self.ready = anyio.Event()
            self.drained.set()
        return chunk


class CollectorMetrics:
    """The collector's own counters, written to a textfile since nothing may scrape it."""

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


class Collector:
    """One collector process's state and tasks."""

    def __init__(
        self,
        settings: CollectorSettings,
        *,
        appliance_client: httpx.AsyncClient | None = None,
        push_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.key = settings.packet_key()
        self.started = time.time()
        self.metrics = CollectorMetrics()
        self._appliance_client = appliance_client or _appliance_client(settings)
        self._push_client = push_client or _push_client(settings)
        self.slots = [
            SourceSlot(
                open_source(url, self._appliance_client),
                HealthMonitor(settings.claimed_entropy_bits, alpha_log2=settings.health_alpha_log2),
                BatchTester(settings.health_alpha_log2),
            )
            for url in settings.appliance_urls
        ]
        self.targets = settings.targets
        share = max(1024, settings.collector_buffer_size // len(self.targets))
        self.outboxes = {t.gateway_id: Outbox(share) for t in self.targets}
        self.pushed = dict.fromkeys(self.outboxes, 0)
        self.dropped: dict[str, int] = {"buffer_full": 0, "refused": 0, "expired": 0}
        self.contributing = 0
        self.paused_reason: str | None = "starting"
        # Two sequences per target, data and telemetry, both from this process's start time
        # in microseconds (DESIGN §3): a heartbeat never waits behind a data packet the
        # gateway cannot take yet (507), nor makes that packet's retry look like a replay.
        self._seq_start = int(self.started * 1_000_000)
        self._seq = dict.fromkeys(self.outboxes, self._seq_start)
        self._telemetry_seq = dict.fromkeys(self.outboxes, self._seq_start)
        #: The last data seq whose fate is settled (delivered, refused, expired, or sent as a
        #: datagram): heartbeats carry it so the gateway counts loss at the tail too.
        self._settled_seq = dict.fromkeys(self.outboxes, 0)
        self._fetching = True
        self._turn = 0

    # -- packets ---------------------------------------------------------------------------

    def _packet(self, target: PushTarget, data: bytes, *, telemetry: bool = False) -> bytes:
        counters = self._telemetry_seq if telemetry else self._seq
        counters[target.gateway_id] += 1
        flags = wire.FLAG_ENCRYPTED if self.settings.encrypt_payload else 0
        if telemetry:
            flags |= wire.FLAG_TELEMETRY
        return wire.encode(
            wire.Packet(
                id=_uuid4_bytes(),
                flags=flags,
                source=self.settings.collector_id,
                dest=target.gateway_id,
                seq=counters[target.gateway_id],
                ts_us=int(time.time() * 1_000_000),
                data=data,
            ),
            self.key,
        )

    def telemetry(self, target: PushTarget) -> dict[str, Any]:
        """The statistics one gateway is sent (no secret, no entropy)."""
        return {
            "collector_id": self.settings.collector_id,
            "uptime_seconds": round(time.time() - self.started, 3),
            "mixing": self.settings.mixing,
            "min_sources": self.settings.min_sources,
            "sources_configured": len(self.slots),
            "sources_contributing": self.contributing,
            "output_paused": self.paused_reason is not None,
            "paused_reason": self.paused_reason or "",
            "health": {s.source.name: s.monitor.state.value for s in self.slots},
            "fetch_errors": {s.source.name: s.fetch_errors for s in self.slots},
            "fetched_bytes": {s.source.name: s.fetched_bytes for s in self.slots},
            "mixed_bytes": {s.source.name: s.mixed_bytes for s in self.slots},
            "discarded_bytes": {s.source.name: s.discarded_bytes for s in self.slots},
            "health_failures": {s.source.name: s.monitor.failures for s in self.slots},
            "pushed_bytes": self.pushed[target.gateway_id],
            "data_seq": self._settled_seq[target.gateway_id],
            "dropped_bytes": dict(self.dropped),
            "buffered_bytes": len(self.outboxes[target.gateway_id].data),
        }

    # -- fetching --------------------------------------------------------------------------

    async def _fetch_one(self, slot: SourceSlot, results: dict[int, bytes]) -> None:
        n = self.settings.fetch_size
        try:
            with anyio.fail_after(self.settings.fetch_timeout_ms / 1000):
                data = await slot.source.fetch(n)
        except (SourceError, TimeoutError) as err:
            slot.fetch_errors += 1
            slot.errors_in_row += 1
            slot.retry_at = time.monotonic() + backoff_delay(
                slot.errors_in_row, base=self.settings.fetch_interval_ms / 1000
            )
            detail = str(err) or "timed out"
            self.metrics.fetch_errors.labels(slot.source.name).inc()
            if slot.last_error != detail or slot.errors_in_row == 1:
                log.warning("fetch_failed", appliance=slot.source.name, error=detail,
                            errors_in_row=slot.errors_in_row)  # fmt: skip
            slot.last_error = detail
            return
        if slot.errors_in_row:
            log.info("fetch_recovered", appliance=slot.source.name)
        slot.errors_in_row = 0
        slot.last_error = None
        slot.fetched_bytes += len(data)
        self.metrics.fetched.labels(slot.source.name).inc(len(data))
        results[id(slot)] = data

    def _eligible(self, slot: SourceSlot, now: float) -> bool:
        if now < slot.retry_at:
            return False
        quarantined = slot.monitor.state is SourceState.QUARANTINED
        return not quarantined or slot.monitor.ready_to_retry(now)

    async def fetch_round(self) -> bytes:
        """One round: fetch, test, mix. Returns the mixed output (empty when paused)."""
        now = time.monotonic()
        results: dict[int, bytes] = {}
        async with anyio.create_task_group() as tg:
            for slot in self.slots:
                if self._eligible(slot, now):
                    tg.start_soon(self._fetch_one, slot, results)
        healthy: list[tuple[SourceSlot, bytes]] = []
        passed = 0
        now = time.monotonic()
        for slot in self.slots:
            data = results.get(id(slot))
            if data is not None:
                ok, released = self._test(slot, data, now)
                passed += ok
                if released is not None:
                    healthy.append((slot, released))
        for slot in self.slots:
            self.metrics.health.labels(slot.source.name).set(
                {"healthy": 1.0, "startup": 0.5}.get(slot.monitor.state.value, 0.0)
            )
        self.contributing = len(healthy)
        if len(healthy) < self.settings.min_sources <= passed:
            return b""  # enough sources passed, their first batches are held: not a pause
        if len(healthy) < self.settings.min_sources:
            reason = (
                f"{len(healthy)} of {len(self.slots)} sources healthy, "
                f"QRNG_MIN_SOURCES={self.settings.min_sources}"
            )
            if reason != self.paused_reason:
                log.warning("output_paused", reason=reason)
            self.paused_reason = reason
            self.metrics.paused.set(1)
            return b""
        if self.paused_reason is not None:
            log.info("output_resumed", sources_contributing=len(healthy))
        self.paused_reason = None
        self.metrics.paused.set(0)
        output = mix([data for _, data in healthy], self.settings.mixing)
        for slot, _ in healthy:
            slot.mixed_bytes += len(output)
        return output

    def _test(self, slot: SourceSlot, data: bytes, now: float) -> tuple[bool, bytes | None]:
        """Test ``data``: did it pass, and the batch it releases (the one held before it)."""
        before = slot.monitor.state
        verdict = slot.monitor.check(data, now)
        failed = verdict.failed_test.value if verdict.failed_test is not None else None
        if failed is None and verdict.state is not SourceState.QUARANTINED:
            batch_failure = slot.batch_tests.check(data)
            if batch_failure is not None:
                slot.monitor.refuse(now)
                failed = batch_failure.value
        if failed is not None:
            discarded = len(data) + len(slot.held or b"")
            slot.held = None
            slot.discarded_bytes += discarded
            self.metrics.discarded.labels(slot.source.name).inc(discarded)
            log.error(
                "source_quarantined",
                appliance=slot.source.name,
                test=failed,
                sample=verdict.failure_offset,
                cooldown_s=round(slot.monitor.cooldown_remaining(now), 1),
                discarded_bytes=discarded,
            )
            return False, None
        if verdict.state is not before:
            log.info("source_state", appliance=slot.source.name, state=verdict.state.value)
        if not verdict.ok:
            return False, None
        released, slot.held = slot.held, data
        return True, released

    def distribute(self, output: bytes) -> None:
        """Give ``output`` whole to the outbox with the most room (split fan-out)."""
        if not output:
            return
        boxes = list(self.outboxes.values())
        self._turn = (self._turn + 1) % len(boxes)
        rotated = boxes[self._turn :] + boxes[: self._turn]  # ties go round-robin
        box = max(rotated, key=lambda b: b.free)
        if box.free < len(output):
            self.dropped["buffer_full"] += len(output)
            self.metrics.dropped.labels("buffer_full").inc(len(output))
            return
        box.add(output)

    async def fetch_loop(self, stop: anyio.Event) -> None:
        interval = self.settings.fetch_interval_ms / 1000
        while not stop.is_set():
            started = time.monotonic()
            self.distribute(await self.fetch_round())
            self.metrics.buffered.set(sum(len(b.data) for b in self.outboxes.values()))
            with anyio.move_on_after(max(0.0, started + interval - time.monotonic())):
                await stop.wait()

    # -- pushing ---------------------------------------------------------------------------

    def _delivered(self, target: PushTarget, n: int) -> None:
        self.pushed[target.gateway_id] += n
        self.metrics.pushed.labels(target.gateway_id).inc(n)

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] += n
        self.metrics.dropped.labels(reason).inc(n)

    async def _next_data(self, target: PushTarget, size: int, fetched: anyio.Event) -> bytes:
        """The next bytes to send to ``target``, or ``b""`` once fetching is over (``fetched``
        is set) and nothing is left. Waiting for the fetch loop to end, not merely for the
        stop signal, is what lets the last round's bytes out in the final flush.
        """
        box = self.outboxes[target.gateway_id]
        while not box.data:
            if fetched.is_set():
                return b""
            async with anyio.create_task_group() as tg:

                async def _wake_when_fetched() -> None:
                    await fetched.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(_wake_when_fetched)
                await box.ready.wait()
                tg.cancel_scope.cancel()
        return box.take(size)

    async def heartbeat(self, target: PushTarget, done: anyio.Event) -> None:
        """Telemetry to one gateway every interval, on its own, whatever the data's fate.

        It has its own task, sequence and (for UDP) socket: a full pool that makes data
        packets wait (507) or an outbox that never empties cannot delay it, so the gateway
        sees the link up as long as it is. One last heartbeat goes out after the final flush,
        so the gateway learns the last data ``seq`` (tail loss).
        """
        send, close = self._sender(target)
        try:
            while True:
                stats = wire.encode_telemetry(self.telemetry(target))
                await send(self._packet(target, stats, telemetry=True))
                if done.is_set():
                    return
                with anyio.move_on_after(self.settings.telemetry_interval_s):
                    await done.wait()
        finally:
            close()

    def _sender(self, target: PushTarget) -> tuple[Callable[[bytes], Any], Callable[[], None]]:
        """A send-once function for heartbeats (nothing is retried: the next one comes)."""
        if target.scheme != "udp":

            async def post(raw: bytes) -> None:
                await self._post(target, raw)

            return post, lambda: None
        sock = _udp_socket(target)
        sendto = _sendto(sock, (target.host, target.port))

        async def send(raw: bytes) -> None:
            try:
                await sendto(raw)
            except OSError as err:
                log.warning("udp_send_failed", gateway=target.gateway_id, error=str(err))

        return send, sock.close

    async def http_sender(
        self, target: PushTarget, fetched: anyio.Event, done: anyio.Event
    ) -> None:
        """Push data to one HTTP(S) gateway until ``done`` (set after the final flush)."""
        ttl_guard = 120.0  # well inside the gateway's default 300 s TTL
        attempt = 0
        gid = target.gateway_id
        while not done.is_set():
            data = await self._next_data(target, HTTP_CHUNK, fetched)
            if not data:
                return
            raw = self._packet(target, data)
            seq = self._seq[gid]
            built = time.monotonic()
            while not done.is_set():
                outcome = await self._post(target, raw)
                if outcome in ("delivered", "replayed"):
                    self._delivered(target, len(data))
                    attempt = 0
                    break
                if outcome == "refused":
                    self._drop("refused", len(data))
                    break
                if time.monotonic() - built > ttl_guard:
                    self._drop("expired", len(data))
                    break
                attempt += 1
                with anyio.move_on_after(backoff_delay(attempt)):
                    await done.wait()
            else:
                self._drop("expired", len(data))
            self._settled_seq[gid] = seq

    async def _post(self, target: PushTarget, raw: bytes) -> str:
        try:
            response = await self._push_client.post(
                target.url, content=raw, headers={"content-type": "application/x-msgpack"}
            )
        except (httpx.HTTPError, ssl.SSLError) as err:
            # httpcore wraps TLS errors only during the handshake: under TLS 1.3 a gateway's
            # refusal of our client certificate arrives on the first read, as a bare SSLError.
            self.metrics.push_errors.labels(target.gateway_id).inc()
            log.warning("push_failed", gateway=target.gateway_id, error=type(err).__name__)
            return "retry"
        code = response.status_code
        if code == 200:
            return "delivered"
        if code == 409:
            return "replayed"
        self.metrics.push_errors.labels(target.gateway_id).inc()
        if code == 507 or code >= 500 or code == 429:
            if code != 507:
                log.warning("push_failed", gateway=target.gateway_id, status=code)
            return "retry"
        log.error(
            "push_refused",
            gateway=target.gateway_id,
            status=code,
            detail=_detail(response),
        )
        return "refused"

    async def udp_sender(self, target: PushTarget, fetched: anyio.Event, done: anyio.Event) -> None:
        """Send data datagrams to one UDP gateway, paced, never reading anything."""
        sock = _udp_socket(target)
        loop_sendto = _sendto(sock, (target.host, target.port))
        rate = self.settings.udp_max_bitrate / 8  # bytes per second
        size = self.settings.udp_payload_bytes
        budget_at = time.monotonic()  # when the pacer's budget is back to zero
        gid = target.gateway_id
        try:
            while not done.is_set():
                data = await self._next_data(target, size, fetched)
                if not data:
                    return
                raw = self._packet(target, data)
                now = time.monotonic()
                budget_at = max(budget_at, now) + len(raw) / rate
                if budget_at - now > 0.002:
                    await anyio.sleep(budget_at - now)
                try:
                    await loop_sendto(raw)
                except OSError as err:
                    # No route, buffer full: the datagram is lost like any other on the link.
                    self.metrics.push_errors.labels(gid).inc()
                    self._drop("refused", len(data))
                    log.warning("udp_send_failed", gateway=gid, error=str(err))
                else:
                    self._delivered(target, len(data))
                self._settled_seq[gid] = self._seq[gid]
        finally:
            sock.close()

    # -- running ---------------------------------------------------------------------------

    async def write_textfile(self, stop: anyio.Event) -> None:
        path = self.settings.metrics_textfile
        if path is None:
            return
        while True:
            try:
                write_to_textfile(str(path), self.metrics.registry)
            except OSError as err:
                log.warning("metrics_textfile_failed", path=str(path), error=str(err))
            if stop.is_set():
                return
            with anyio.move_on_after(self.settings.telemetry_interval_s):
                await stop.wait()

    async def run(self, stop: anyio.Event) -> None:
        """Run until ``stop``; then flush the outboxes for up to :data:`FLUSH_SECONDS`."""
        fetched = anyio.Event()  # the fetch loop has returned: nothing more will be queued
        done = anyio.Event()  # the final flush is over: senders give up on what is left
        log.info(
            "collector_started",
            collector_id=self.settings.collector_id,
            appliances=[s.source.name for s in self.slots],
            gateways=[t.gateway_id for t in self.targets],
            mixing=self.settings.mixing,
            min_sources=self.settings.min_sources,
            encrypt=self.settings.encrypt_payload,
        )
        try:
            async with anyio.create_task_group() as tg:
                for target in self.targets:
                    sender = self.udp_sender if target.scheme == "udp" else self.http_sender
                    tg.start_soon(sender, target, fetched, done)
                    tg.start_soon(self.heartbeat, target, done)
                tg.start_soon(self.write_textfile, stop)
                await self.fetch_loop(stop)
                fetched.set()
                with anyio.move_on_after(FLUSH_SECONDS):
                    for box in self.outboxes.values():
                        if box.data:
                            await box.drained.wait()
                done.set()
        finally:
            left = sum(len(b.data) for b in self.outboxes.values())
            if left:
                self._drop("expired", left)
            log.info(
                "collector_stopped",
                pushed_bytes=self.pushed,
                undelivered_bytes=left,
            )
            await self._appliance_client.aclose()
            await self._push_client.aclose()


def _uuid4_bytes() -> bytes:
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail", ""))[:200] if isinstance(body, dict) else ""


def _udp_socket(target: PushTarget) -> socket.socket:
    """A non-blocking UDP socket that only ever sends (P1)."""
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _sendto(sock: socket.socket, address: tuple[str, int]) -> Callable[[bytes], Any]:
    """Send one datagram on the non-blocking ``sock``, waiting for room when there is none.

    A plain ``sendto`` and a wait for writability, not ``loop.sock_sendto``: uvloop, which
    the services run on, does not implement that (NotImplementedError).
    """

    async def send(raw: bytes) -> None:
        while True:
            try:
                sock.sendto(raw, address)
            except BlockingIOError:
                await anyio.wait_writable(sock)
            else:
                return

    return send


def _appliance_client(settings: CollectorSettings) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = True
    if settings.appliance_ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.appliance_ca_file))
    if not settings.appliance_tls_verify:
        log.warning(
            "appliance_tls_unverified",
            message="QRNG_APPLIANCE_TLS_VERIFY=false: appliance certificates are NOT checked; "
            "anyone on the path can feed this collector. Use QRNG_APPLIANCE_CA_FILE instead.",
        )
        verify = False
    for url in settings.appliance_urls:
        if url.startswith("http://") and not _loopback(url):
            log.warning(
                "appliance_plain_http",
                appliance=url,
                message="plain HTTP to an appliance off loopback: use https://",
            )
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(settings.fetch_timeout_ms / 1000),
        limits=httpx.Limits(max_connections=max(4, 2 * len(settings.appliance_urls))),
    )


def _push_client(settings: CollectorSettings) -> httpx.AsyncClient:
    """The client for HTTP(S) push targets: TLS 1.2 or newer, optionally mutual.

    ``QRNG_GATEWAY_CA_FILE`` replaces the trust store for the gateways' certificates. Without
    it the gateways are checked against the same store as before (httpx's default: certifi,
    or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), so adding only a client certificate changes who we
    are, not whom we trust. The client certificate is offered to gateways that ask for one
    (``QRNG_TLS_CLIENT_CA_FILE`` there). Settings validation already loaded these files, so a
    bad one stopped the process with one line before it got here.
    """
    context = (
        ssl.create_default_context(cafile=str(settings.gateway_ca_file))
        if settings.gateway_ca_file is not None
        else httpx.create_ssl_context()
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.gateway_client_cert_file is not None:
        context.load_cert_chain(settings.gateway_client_cert_file, settings.gateway_client_key_file)
    tls_files = (
        settings.gateway_ca_file,
        settings.gateway_client_cert_file,
        settings.gateway_client_key_file,
    )
    https = any(t.scheme == "https" for t in settings.targets)
    if any(path is not None for path in tls_files) and not https:
        # Not an error: a UDP-only collector may share an env file with an HTTPS one. But a
        # forgotten https:// would send in the clear what the operator meant to protect.
        log.warning(
            "push_tls_unused",
            message="QRNG_GATEWAY_CA_FILE / QRNG_GATEWAY_CLIENT_CERT_FILE are set, but no "
            "QRNG_GATEWAY_PUSH_URL target is https://: they are not used",
        )
    return httpx.AsyncClient(
        verify=context,
        timeout=httpx.Timeout(settings.fetch_timeout_ms / 1000, connect=5.0),
        limits=httpx.Limits(max_connections=len(settings.targets) * 2),
    )


def _loopback(url: str) -> bool:
    host = httpx.URL(url).host
    return host in ("localhost", "::1") or host.startswith("127.")


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
        collector = Collector(settings)
        async with anyio.create_task_group() as tg:

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
