"""UDP one-way transport, end to end with real processes (issue 9; DESIGN §1 P1, §3, §6).

- The proof (``netns``): in two network namespaces joined by a veth pair whose backward
  direction the kernel drops (nftables, counted), entropy crosses over UDP and reaches the
  gateway's clients, while an HTTP push cannot even complete a TCP handshake.
- Loss accounting: a relay that drops every tenth datagram; the gateway's gap count equals
  the number dropped, and the bytes it counts equal the bytes the relay let through.
- Refusals: forged, tampered, replayed and malformed datagrams are counted by reason; a flood
  of garbage neither refuses nor stops the valid stream.
- Link down: three silent telemetry intervals raise the "link down" warning.

Everything waits by polling with a deadline (``eventually``); nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qrng_dd.errors import REJECT_REASONS
from qrng_dd.gateway.udp import RECEIVE_BUFFER_BYTES
from qrng_dd.wire import packet as wire
from tests.support.diode import Running, cli, eventually, start_appliance, start_collector
from tests.support.gateway import (
    RunningGateway,
    clean_environ,
    free_udp_port,
    make_raw,
    start_gateway,
    stop,
    udp_socket_drops,
)
from tests.support.netns import NamespacesUnavailableError, OneWayLink, check_namespaces_possible
from tests.support.netns import one_way_link as _one_way_link

pytestmark = [pytest.mark.e2e]

HMAC_HEX = secrets.token_hex(32)
API_KEY = secrets.token_urlsafe(24)
KEY = wire.PacketKey.from_hex(HMAC_HEX)
REASONS = REJECT_REASONS

#: Fast enough to move hundreds of datagrams in a second or two, slow enough for loopback.
FLOW = {
    "QRNG_FETCH_INTERVAL_MS": "20",
    "QRNG_FETCH_SIZE": "4096",
    "QRNG_UDP_PAYLOAD_BYTES": "1200",
    "QRNG_UDP_MAX_BITRATE": "50000000",
    "QRNG_TELEMETRY_INTERVAL_S": "1",
}


# -- reading the gateway ------------------------------------------------------------------


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def metrics(gateway: RunningGateway) -> dict[str, float]:
    """The gateway's ``/metrics`` samples, keyed ``name{labels}`` exactly as exposed."""
    with gateway.client() as client:
        text = client.get("/metrics").text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if match := _SAMPLE.match(line):
            samples[match[1]] = float(match[2])
    return samples


def rejected(samples: dict[str, float]) -> dict[str, int]:
    """``qrng_packets_rejected_total`` by reason."""
    return {r: int(samples.get(f'qrng_packets_rejected_total{{reason="{r}"}}', 0)) for r in REASONS}


def source(gateway: RunningGateway, name: str = "collector") -> dict[str, Any]:
    """``/api/status`` → ``sources.<name>``, or ``{}`` before its first packet."""
    entry: dict[str, Any] = gateway.status()["sources"].get(name, {})
    return entry


def accepted(gateway: RunningGateway) -> int:
    """Packets the gateway accepted from the collector."""
    return int(source(gateway).get("packets_accepted", 0))


def seen(gateway: RunningGateway) -> int:
    """Valid datagrams the gateway has accounted for: accepted plus counted as lost."""
    entry = source(gateway)
    return int(entry.get("packets_accepted", 0)) + int(entry.get("sequence_gaps", 0))


def log_events(stderr: str, event: str) -> list[dict[str, Any]]:
    """The JSON log records of one ``event`` in a process's stderr."""
    found = []
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
    return found


# -- the dropping relay -------------------------------------------------------------------


@dataclass
class Seen:
    """One datagram that reached the relay."""

    index: int
    seq: int
    telemetry: bool
    data_bytes: int
    dropped: bool
    during_flood: bool


_DRAIN_MARKER = b"relay: drain marker"


@dataclass
class DroppingRelay:
    """A UDP relay on 127.0.0.1 that forwards datagrams to ``target``, dropping some.

    With ``drop_every=k``, the k-th, 2k-th, ... datagram received is dropped, up to and including
    datagram ``drop_until``, and so is the first telemetry datagram after a forwarded one
    (telemetry has its own sequence, whose first packet is its baseline: its loss is a gap
    too); everything after that is
    forwarded, so every drop is followed by a datagram that reveals it. Every datagram is
    decoded (with the shared key) to count the entropy bytes it carries.

    Until ``armed`` (the gateway is up), datagrams are discarded and kept out of the log (only
    their entropy bytes are counted): the gateway's first packet is its baseline, so what came
    before it is neither a gap nor a loss.
    """

    target: tuple[str, int]
    drop_every: int = 0
    drop_until: int = 0
    log: list[Seen] = field(default_factory=list)
    captured: list[bytes] = field(default_factory=list)
    flooding: bool = False
    armed: bool = False
    forwarded_count: int = 0
    unarmed_data_bytes: int = 0

    def __post_init__(self) -> None:
        self._inbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._inbound.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._inbound.bind(("127.0.0.1", 0))
        self._inbound.settimeout(0.05)  # poll interval for the stop flag
        self._outbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._stop = threading.Event()
        self._drained = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)

    @property
    def port(self) -> int:
        port: int = self._inbound.getsockname()[1]
        return port

    def __enter__(self) -> DroppingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._inbound.close()
        self._outbound.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._inbound.recv(65_535)
            except TimeoutError:
                continue
            if raw == _DRAIN_MARKER:
                self._drained.set()
                continue
            packet = wire.decode(raw, KEY)  # the collector only ever sends valid packets
            if not self.armed:
                self.unarmed_data_bytes += 0 if packet.telemetry else len(packet.data)
                continue
            index = len(self.log) + 1
            drop = bool(self.drop_every) and (
                (index <= self.drop_until and index % self.drop_every == 0)
                or (
                    packet.telemetry
                    and any(s.telemetry for s in self.log)
                    and not self.telemetry_dropped()
                )
            )
            if not drop:
                self._outbound.sendto(raw, self.target)
                self.forwarded_count += 1
                if not packet.telemetry and len(self.captured) < 8:
                    self.captured.append(raw)
            data_bytes = 0 if packet.telemetry else len(packet.data)
            self.log.append(
                Seen(index, packet.seq, packet.telemetry, data_bytes, drop, self.flooding)
            )

    def drain(self) -> None:
        """Return once the relay has handled every datagram that reached it before this call."""
        self._drained.clear()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
            marker.sendto(_DRAIN_MARKER, ("127.0.0.1", self.port))  # queued behind the others
        eventually(self._drained.is_set, what="relay drained")

    def telemetry_dropped(self) -> bool:
        return any(s.dropped and s.telemetry for s in self.log)

    def received(self) -> int:
        return len(self.log)

    def forwarded(self) -> list[Seen]:
        return [s for s in list(self.log) if not s.dropped]


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def appliance() -> Iterator[Running]:
    """One simulator on loopback for the loopback tests."""
    with start_appliance() as running:
        yield running


@dataclass
class Flow:
    """Collector → (relay →) gateway on loopback, running."""

    gateway: RunningGateway
    udp_port: int
    collector: Running
    relay: DroppingRelay


@contextlib.contextmanager
def udp_flow(appliance: Running, *, drop_every: int = 0, drop_until: int = 0) -> Iterator[Flow]:
    """A gateway with HTTP and UDP, and a collector pushing to it through a relay.

    The collector starts while the gateway does (both take seconds to import); the relay is
    armed once the gateway answers.
    """
    udp_port = free_udp_port()
    env = {
        "QRNG_HMAC_SECRET_KEY": HMAC_HEX,
        "QRNG_API_KEYS": API_KEY,
        "QRNG_UDP_LISTEN": f"127.0.0.1:{udp_port}",
        "QRNG_TELEMETRY_INTERVAL_S": "1",
        "QRNG_LOG_FORMAT": "json",
        "QRNG_LOG_LEVEL": "info",
    }
    relay = DroppingRelay(("127.0.0.1", udp_port), drop_every, drop_until)
    push_url = f"udp://127.0.0.1:{relay.port}"
    with (
        relay,
        start_collector(collector_env(appliance.url, push_url)) as collector,
        start_gateway(env) as gateway,
    ):
        relay.armed = True
        yield Flow(gateway, udp_port, collector, relay)


def collector_env(appliance_url: str, push_url: str) -> dict[str, str]:
    """The collector's environment for one target."""
    return {
        "QRNG_HMAC_SECRET_KEY": HMAC_HEX,
        "QRNG_APPLIANCE_URLS": appliance_url,
        "QRNG_GATEWAY_PUSH_URL": push_url,
        **FLOW,
    }


@pytest.fixture
def link() -> Iterator[OneWayLink]:
    """Two namespaces joined by a link the kernel makes one-way; skipped only without netns."""
    try:
        check_namespaces_possible()
    except NamespacesUnavailableError as err:
        pytest.skip(f"the one-way proof needs network namespaces: {err}")
    with _one_way_link() as made:
        yield made


# -- 1. the proof: across a link that carries nothing back ---------------------------------

GW_HTTP_PORT = 7764
GW_UDP_PORT = 7765
APPLIANCE_PORT = 8443


@contextlib.contextmanager
def namespaced_flow(link: OneWayLink, push_url: str) -> Iterator[tuple[Running, Running]]:
    """Gateway in the gateway namespace; simulator and collector in the collector namespace."""
    gateway_env = clean_environ(
        {
            "QRNG_HMAC_SECRET_KEY": HMAC_HEX,
            "QRNG_API_KEYS": API_KEY,
            "QRNG_HOST": link.gateway_ip,
            "QRNG_PORT": str(GW_HTTP_PORT),
            "QRNG_UDP_LISTEN": f"{link.gateway_ip}:{GW_UDP_PORT}",
            "QRNG_TELEMETRY_INTERVAL_S": "1",
            "QRNG_ACCESS_LOG": "false",
            "QRNG_LOG_FORMAT": "json",
            "QRNG_MAX_CLOCK_SKEW_S": "0",
        }
    )
    appliance_url = f"http://127.0.0.1:{APPLIANCE_PORT}"
    appliance_argv = cli("appliance", "--host", "127.0.0.1", "--port", str(APPLIANCE_PORT))
    gw_url = f"http://{link.gateway_ip}:{GW_HTTP_PORT}"
    with (
        link.run(link.gateway_ns, cli("gateway"), gateway_env) as gateway,
        link.run(link.collector_ns, appliance_argv, clean_environ({})) as simulator,
    ):

        def up(ns: str, url: str, proc: Running) -> bool:
            assert proc.proc.poll() is None, proc.stderr()
            return link.http_get(ns, url)[0] in (200, 503)

        eventually(
            lambda: up(link.collector_ns, f"{appliance_url}/api/2.0/systeminfo", simulator),
            what="simulator up",
        )
        env = clean_environ({"QRNG_LOG_FORMAT": "json", **collector_env(appliance_url, push_url)})
        with link.run(link.collector_ns, cli("collector"), env) as collector:
            eventually(lambda: up(link.gateway_ns, f"{gw_url}/health", gateway), what="gateway up")
            yield gateway, collector


def ns_status(link: OneWayLink) -> dict[str, Any]:
    """``/api/status`` of the namespaced gateway, asked from inside its namespace."""
    code, body = link.http_get(
        link.gateway_ns,
        f"http://{link.gateway_ip}:{GW_HTTP_PORT}/api/status",
        {"Authorization": f"Bearer {API_KEY}"},
    )
    assert code == 200, body
    document: dict[str, Any] = json.loads(body)
    return document


def assert_diode_closed(link: OneWayLink) -> None:
    """The kernel drops what the gateway side sends towards the collector side (counted)."""
    before = link.counter("backward")
    link.probe_backward(3)
    eventually(lambda: link.counter("backward") >= before + 3, what="backward probes dropped")


@pytest.mark.netns
def test_udp_entropy_crosses_a_link_that_carries_nothing_back(link: OneWayLink) -> None:
    """Over UDP, entropy reaches the gateway's clients across a link cut backwards in the kernel."""
    assert_diode_closed(link)
    push_url = f"udp://{link.gateway_ip}:{GW_UDP_PORT}"
    with namespaced_flow(link, push_url) as (gateway, collector):

        def accepted_over_udp() -> dict[str, Any] | None:
            entry: dict[str, Any] = ns_status(link)["sources"].get("collector", {})
            return entry if entry.get("packets_accepted", 0) >= 20 else None

        entry = eventually(accepted_over_udp, what="20 packets accepted over UDP")
        url = f"http://{link.gateway_ip}:{GW_HTTP_PORT}/api/random?bytes=64"
        code, body = link.http_get(link.gateway_ns, url, {"Authorization": f"Bearer {API_KEY}"})
        assert code == 200, body
        assert re.fullmatch(r"[0-9a-f]{128}", body), body
        after = ns_status(link)
        assert collector.proc.poll() is None, collector.stderr()
        assert gateway.proc.poll() is None, gateway.stderr()
    print(f"over UDP: {after['sources']['collector']['packets_accepted']} packets accepted")
    assert entry["sequence_gaps"] == 0
    assert after["total_bytes_served"] == 64
    assert after["rejected_packets"] == dict.fromkeys(REASONS, 0)
    assert_diode_closed(link)  # and the cut was in force all along


@pytest.mark.netns
def test_http_push_cannot_cross_the_one_way_link(link: OneWayLink) -> None:
    """Over HTTP nothing crosses: the gateway's SYN-ACKs are dropped, so the pool stays empty."""
    assert_diode_closed(link)
    assert link.counter("synack") == 0
    push_url = f"http://{link.gateway_ip}:{GW_HTTP_PORT}/push"
    with namespaced_flow(link, push_url) as (gateway, collector):

        def failed_attempt() -> bool:
            assert collector.proc.poll() is None, collector.stderr()
            return any(
                e.get("error") == "ConnectTimeout" for e in collector.log_events("push_failed")
            )

        # The collector's connect attempt ran its whole course and failed, and meanwhile the
        # kernel dropped the gateway's handshake replies: the forward half arrived, the
        # backward half never did.
        eventually(failed_attempt, deadline_s=30.0, what="a push attempt timed out")
        assert link.counter("synack") > 0
        document = ns_status(link)
        assert gateway.proc.poll() is None, gateway.stderr()
        # Its final flush could only wait out its deadline: nothing can cross. Kill it.
        collector.proc.kill()
        collector.proc.wait()
    assert document["sources"] == {}
    assert document["buffer_bytes_available"] == 0
    assert "no packet received yet" in document["warnings"]


# -- 2. loss accounting ---------------------------------------------------------------------


def test_every_dropped_datagram_is_counted_as_a_sequence_gap(appliance: Running) -> None:
    """Datagrams dropped on the way are gaps, one each; every forwarded byte is counted once."""
    with udp_flow(appliance, drop_every=10, drop_until=200) as flow:
        gateway, relay = flow.gateway, flow.relay

        def dropping_done() -> bool:
            # Every planned drop happened and the latest datagram was forwarded: all revealed.
            log = relay.log
            return len(log) >= 240 and relay.telemetry_dropped() and not log[-1].dropped

        eventually(dropping_done, what="240 datagrams at the relay, a telemetry one dropped")
        assert stop(flow.collector.proc) == 0, flow.collector.stderr()
        (stopped,) = flow.collector.log_events("collector_stopped")
        # The collector has flushed and exited: wait until the relay and then the gateway have
        # handled everything it sent.
        relay.drain()
        forwarded = relay.forwarded()
        eventually(lambda: accepted(gateway) >= len(forwarded), what="gateway caught up")
        entry = source(gateway)
        samples = metrics(gateway)
        log = list(relay.log)
    dropped = [s for s in log if s.dropped]
    received_bytes = samples['qrng_bytes_received_total{source="collector"}']
    print(  # shown when the test fails, or with -s
        f"relay: {len(log)} datagrams ({sum(s.telemetry for s in log)} telemetry), "
        f"{len(dropped)} dropped ({sum(s.telemetry for s in dropped)} telemetry); gateway: "
        f"{entry['packets_accepted']} accepted, {entry['sequence_gaps']} gaps, "
        f"loss_ratio {entry['loss_ratio']}, "
        f"{received_bytes:.0f} bytes received"
    )
    # The 10th, 20th, ... 200th, and one telemetry datagram (unless it was a 10th already).
    assert 20 <= len(dropped) <= 21
    assert any(s.telemetry for s in dropped)
    assert entry["packets_accepted"] == len(forwarded)
    assert entry["sequence_gaps"] == len(dropped)
    assert samples['qrng_sequence_gaps_total{source="collector"}'] == len(dropped)
    assert entry["loss_ratio"] == round(len(dropped) / (len(dropped) + len(forwarded)), 6)
    assert entry["restarts"] == 0
    assert samples['qrng_packets_accepted_total{source="collector"}'] == len(forwarded)
    # Bytes: what the gateway counts is exactly what the relay let through, and everything the
    # collector says it sent reached the relay (nothing else was lost).
    assert received_bytes == sum(s.data_bytes for s in forwarded)
    sent = relay.unarmed_data_bytes + sum(s.data_bytes for s in log)
    assert stopped["pushed_bytes"] == {"gateway": sent}
    assert stopped["undelivered_bytes"] == 0
    for stream in (True, False):  # telemetry and data: each its own unbroken sequence
        seqs = [s.seq for s in log if s.telemetry is stream]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert rejected(samples) == dict.fromkeys(REASONS, 0)


# -- 3. refusals and a flood ----------------------------------------------------------------


def test_forged_replayed_and_malformed_datagrams_are_refused_and_counted(
    appliance: Running,
) -> None:
    """Each bad datagram is refused under its reason; nothing answers; the real stream goes on."""
    with (
        udp_flow(appliance) as flow,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker,
    ):
        gateway, relay, udp_port = flow.gateway, flow.relay, flow.udp_port
        eventually(lambda: len(relay.captured) >= 2, what="data datagrams captured")
        real = relay.captured[1]
        real_seq = wire.decode(real, KEY).seq
        eventually(lambda: source(gateway).get("last_seq", 0) >= real_seq, what="accepted")
        other_key = wire.PacketKey.from_hex(secrets.token_hex(32))
        forged = [
            make_raw(other_key, os.urandom(1200), seq=real_seq + 1_000_000 + i) for i in range(3)
        ]
        middle = len(real) // 2
        tampered = real[:middle] + bytes([real[middle] ^ 0x01]) + real[middle + 1 :]
        malformed = [
            b"",
            os.urandom(1),
            os.urandom(700),
            b"\x93\x02" + real[2:],  # version 2
            b"\x93\x01" + os.urandom(100),
            real[:middle],  # truncated
            real[:-1],
        ]
        replayed = [real] * 3
        for raw in [*forged, tampered, *replayed, *malformed]:
            attacker.sendto(raw, ("127.0.0.1", udp_port))
        expected = dict.fromkeys(REASONS, 0) | {"bad_mac": 4, "replay": 3, "malformed": 7}
        eventually(lambda: rejected(metrics(gateway)) == expected, what="refusals counted")
        # The gateway answered none of them (it had processed them all by now).
        attacker.setblocking(False)
        with pytest.raises(BlockingIOError):
            attacker.recv(65_535)
        after_attack = source(gateway)["packets_accepted"]
        eventually(lambda: source(gateway)["packets_accepted"] > after_attack + 5,
                   what="stream goes on")  # fmt: skip
        assert stop(flow.collector.proc) == 0, flow.collector.stderr()
        relay.drain()
        forwarded = relay.forwarded()
        eventually(lambda: accepted(gateway) >= len(forwarded), what="gateway caught up")
        entry = source(gateway)
        document = gateway.status()
    print(f"refused: {document['rejected_packets']}; accepted {entry['packets_accepted']}")
    assert entry["packets_accepted"] == len(forwarded)
    assert entry["sequence_gaps"] == 0
    assert document["rejected_packets"] == expected


FLOOD = 50_000


def test_a_garbage_flood_does_not_stop_the_valid_stream(appliance: Running) -> None:
    """50,000 garbage datagrams are refused as malformed while every valid one is accepted."""
    with (
        udp_flow(appliance) as flow,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder,
    ):
        gateway, relay, udp_port = flow.gateway, flow.relay, flow.udp_port
        eventually(lambda: source(gateway).get("packets_accepted", 0) >= 10, what="flowing")
        garbage = os.urandom(1 << 16)
        sent = 0
        at_start = relay.forwarded_count
        relay.flooding = True
        # As fast as possible, and on until at least five valid datagrams went through the
        # relay meanwhile, so that the valid stream is interleaved with the flood.
        deadline = time.monotonic() + 60.0
        while sent < FLOOD or relay.forwarded_count < at_start + 5:
            offset = (sent * 7919) % (len(garbage) - 128)
            flooder.sendto(garbage[offset : offset + 1 + sent % 128], ("127.0.0.1", udp_port))
            sent += 1
            if sent % 1000 == 0:
                assert time.monotonic() < deadline, "the relay stopped forwarding"
        relay.flooding = False
        # After the flood: the gateway works through it, then keeps accepting.
        through = relay.forwarded_count
        eventually(lambda: seen(gateway) >= through, what="gateway through the flood")
        after_flood = source(gateway)["packets_accepted"]
        eventually(lambda: source(gateway)["packets_accepted"] >= after_flood + 5,
                   what="stream goes on after the flood")  # fmt: skip
        assert stop(flow.collector.proc) == 0, flow.collector.stderr()
        relay.drain()
        forwarded = relay.forwarded()
        eventually(lambda: seen(gateway) >= len(forwarded), what="gateway caught up")
        entry = source(gateway)
        refused = rejected(metrics(gateway))
        kernel_drops = udp_socket_drops(gateway.proc.pid, udp_port)
        (listening,) = log_events(gateway.stderr(), "udp_listening")
    during = [s for s in forwarded if s.during_flood]
    print(  # shown when the test fails, or with -s
        f"flood: {sent} garbage datagrams, {len(forwarded)} valid forwarded ({len(during)} "
        f"mid-flood); gateway: {refused['malformed']} malformed, {entry['packets_accepted']} "
        f"accepted, {entry['sequence_gaps']} gaps; kernel drops {kernel_drops}; "
        f"receive buffer {listening['receive_buffer']}"
    )
    assert len(during) >= 5
    assert sent >= FLOOD
    # No valid datagram is refused: only garbage is, and only as malformed; every valid
    # datagram is accepted or counted as lost. Every datagram that reached the gateway's socket
    # is accounted for: processed, or dropped by the kernel on a full receive buffer.
    assert refused == dict.fromkeys(REASONS, 0) | {"malformed": refused["malformed"]}
    assert entry["packets_accepted"] + entry["sequence_gaps"] == len(forwarded)
    assert refused["malformed"] + entry["packets_accepted"] + kernel_drops == sent + len(forwarded)
    if os.geteuid() == 0:
        # Root forces the 32 MiB receive buffer (reported doubled): the flood fits, nothing is
        # lost, so the valid datagrams sent in the middle of the flood were all accepted.
        assert listening["receive_buffer"] >= 2 * RECEIVE_BUFFER_BYTES
        assert kernel_drops == 0
        assert entry["sequence_gaps"] == 0
        assert refused["malformed"] == sent


# -- 4. link down ---------------------------------------------------------------------------


def test_link_down_is_flagged_after_three_silent_telemetry_intervals(appliance: Running) -> None:
    """With the collector gone, "link down" appears in /health and /api/status warnings."""
    with udp_flow(appliance) as flow:
        gateway = flow.gateway
        eventually(lambda: source(gateway).get("packets_accepted", 0) >= 3, what="flowing")
        assert not any("link down" in w for w in gateway.status()["warnings"])
        assert stop(flow.collector.proc) == 0, flow.collector.stderr()

        def health_warnings() -> list[str]:
            with gateway.client() as client:
                body: dict[str, Any] = client.get("/health").json()
            return [w for w in body["warnings"] if w.startswith("link down")]

        eventually(health_warnings, deadline_s=20.0, what="link down in /health")
        document = gateway.status()
    assert any(w.startswith("link down: no packet for") for w in document["warnings"])
    assert document["sources"]["collector"]["last_packet_age_seconds"] > 3 * 1
