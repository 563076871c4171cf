"""Helpers for the chaos suite: kill and restart processes, degrade the link, draw, account.

Theory of operation:

- **The link.** :func:`lossy_link` takes the two namespaces and the veth pair of
  :func:`tests.support.netns.one_way_link` and adds random loss *in the kernel*: an nftables
  ``netdev`` ingress chain (``numgen random mod 100 < N``, counted) on the gateway's end, and
  on the collector's end too when the link must carry TCP both ways (the one-way cut is
  then lifted; over UDP it stays). This kernel has no ``sch_netem``, so delay and reordering
  are made in userspace instead: :class:`UdpRelay` holds each datagram for a seeded random
  time (which reorders them), :class:`TcpProxy` delays each chunk and, seeded, cuts a
  connection just as the gateway's answer comes back (the collector must resend the
  identical packet, and the gateway must refuse it as a replay).
- **Sockets in a namespace.** The relay and the proxies run as threads of the test process,
  yet their sockets live in the namespaces (:func:`socket_in_netns`): a socket belongs to the
  network namespace its creating thread was in, and ``setns`` moves only the calling thread.
- **Processes.** :class:`Supervised` runs a process under a context-manager factory and can
  SIGKILL its whole tree (granian serves from a worker) and start it again in the same place.
- **Draws.** :class:`DrawClients` runs a few threads that draw ``/api/random`` without ever
  waiting on ``Retry-After`` (a 503 is counted, then the thread paces itself briefly), keep
  every byte received, tally answers per gateway *epoch* (one epoch per gateway life), and can
  be paused at a gate so that nothing is drawn while a gateway is read and killed.

Nothing here asserts; the suite does, from the counts these helpers keep.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import json
import os
import random
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import psutil

from qrng_dd.errors import PacketError
from qrng_dd.wire import packet as wire
from tests.support.netns import OneWayLink, one_way_link

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
#: How often the helper threads look at their stop flag while idle.
_TICK_S = 0.02
#: How long a draw thread paces itself after a 503 or a failed request (never Retry-After:
#: the clients of this suite must count refusals, not wait them out).
_PACE_S = 0.02
_RECV_BYTES = 65_536


# -- namespaces --------------------------------------------------------------------------


def socket_in_netns(ns: str | None, kind: socket.SocketKind) -> socket.socket:
    """An IPv4 socket of ``kind`` created in network namespace ``ns`` (``None``: this one).

    Created by a short-lived thread that joins ``ns`` first: the namespace is the thread's
    own, so the rest of the process stays where it is.

    Raises:
        OSError: the namespace could not be joined.
    """
    if ns is None:
        return socket.socket(socket.AF_INET, kind)
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def create() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                failed.append(OSError(errno, f"setns {ns}: {os.strerror(errno)}"))
                return
        finally:
            os.close(fd)
        made.append(socket.socket(socket.AF_INET, kind))

    thread = threading.Thread(target=create, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def kernel_counters(link: OneWayLink, ns: str) -> dict[str, int]:
    """The namespace's ``/proc/net/snmp`` counters, as ``Udp.NoPorts``, ``Tcp.RetransSegs``."""
    text = subprocess.run(
        link.argv(ns, ["cat", "/proc/net/snmp"]), capture_output=True, text=True, check=True
    ).stdout
    counters: dict[str, int] = {}
    lines = text.splitlines()
    for names, values in itertools.pairwise(lines):
        head, _, rest = names.partition(": ")
        value_head, _, value_rest = values.partition(": ")
        if head == value_head and not rest[:1].isdigit() and value_rest[:1].lstrip("-").isdigit():
            for name, value in zip(rest.split(), value_rest.split(), strict=True):
                counters[f"{head}.{name}"] = int(value)
    return counters


_LOSS_RULES = """\
table netdev qdd_chaos {{
    counter lost {{}}
    chain loss {{
        type filter hook ingress device "{dev}" priority filter; policy accept;
        numgen random mod 100 < {percent} counter name "lost" drop
    }}
}}
"""


@dataclass(frozen=True)
class LossyLink:
    """The namespaces of :func:`one_way_link`, with kernel loss on the way in to each end."""

    link: OneWayLink
    percent: int
    two_way: bool

    def lost(self, ns: str) -> int:
        """Frames the loss rule dropped so far on the way in to namespace ``ns``."""
        argv = ["nft", "-j", "list", "counter", "netdev", "qdd_chaos", "lost"]
        out = subprocess.run(
            self.link.argv(ns, argv), capture_output=True, text=True, check=True
        ).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                packets: int = item["counter"]["packets"]
                return packets
        msg = f"no nftables counter 'lost' in {ns}: {out!r}"
        raise RuntimeError(msg)


def _nft(link: OneWayLink, ns: str, program: str) -> None:
    subprocess.run(
        link.argv(ns, ["nft", "-f", "-"]), input=program, text=True, check=True, capture_output=True
    )


@contextlib.contextmanager
def lossy_link(percent: int, *, two_way: bool) -> Iterator[LossyLink]:
    """Two namespaces whose link drops ``percent`` % of the frames, in the kernel.

    ``two_way`` lifts the one-way cut (TCP needs its answers) and drops frames in both
    directions; otherwise the link stays one-way and only the forward direction is lossy.

    Raises:
        NamespacesUnavailableError: not root, or namespaces not permitted (callers skip).
    """
    with one_way_link() as link:
        _nft(link, link.gateway_ns, _LOSS_RULES.format(dev=link.gateway_dev, percent=percent))
        if two_way:
            _nft(link, link.collector_ns, "delete table netdev qdd_diode\n")
            rules = _LOSS_RULES.format(dev=link.collector_dev, percent=percent)
            _nft(link, link.collector_ns, rules)
        yield LossyLink(link, percent, two_way)


# -- processes ---------------------------------------------------------------------------


def kill_tree(pid: int) -> None:
    """SIGKILL process ``pid`` and its children, as an OOM kill or a power cut would."""
    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(family, timeout=10)


class Supervised(Generic[T]):
    """One service that the suite kills (SIGKILL) and starts again, always in the same place.

    ``start`` is a context-manager factory (a fresh process each time it is entered);
    ``process`` and ``stderr`` read the running one. The output of every past life is kept,
    read once the process has exited, since a life's temporary files go with it.
    """

    def __init__(
        self,
        name: str,
        start: Callable[[], contextlib.AbstractContextManager[T]],
        process: Callable[[T], subprocess.Popen[bytes]],
        stderr: Callable[[T], str],
    ) -> None:
        self.name = name
        self._start = start
        self._process = process
        self._stderr = stderr
        self._stack: contextlib.ExitStack | None = None
        self._current: T | None = None
        self.kills = 0
        self.past_output: list[str] = []
        self.exit_codes: list[int] = []

    @property
    def current(self) -> T:
        assert self._current is not None, f"{self.name} is not running"
        return self._current

    def start(self) -> T:
        """Start a new life (the previous one must be over)."""
        assert self._stack is None, f"{self.name} is already running"
        with contextlib.ExitStack() as stack:
            self._current = stack.enter_context(self._start())
            self._stack = stack.pop_all()
        return self.current

    def kill(self) -> None:
        """SIGKILL the running life (whole process tree) and release what it held."""
        proc = self._process(self.current)
        kill_tree(proc.pid)
        self.kills += 1
        self._end(proc.wait())

    def stop(self, deadline_s: float = 30.0) -> None:
        """SIGTERM the running life, if any, and wait for it to exit (SIGKILL after
        ``deadline_s``); its exit status is kept in :attr:`exit_codes`."""
        if self._stack is None:
            return
        proc = self._process(self.current)
        proc.terminate()
        try:
            code = proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            code = proc.wait()
        self._end(code)

    def _end(self, code: int) -> None:
        self.exit_codes.append(code)
        stack, self._stack = self._stack, None
        self.past_output.append(self._stderr(self.current))
        self._current = None
        if stack is not None:
            stack.close()

    def output(self) -> str:
        """The stderr of every life so far, the running one last."""
        running = [self._stderr(self._current)] if self._current is not None else []
        return "\n".join([*self.past_output, *running])

    def __enter__(self) -> Supervised[T]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the userspace half of the degraded link ----------------------------------------------


class _Thread:
    """A daemon thread with a stop flag, joined on exit."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=target, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=10)


@dataclass(order=True)
class _Held:
    due: float
    index: int
    raw: bytes = field(compare=False)


_DRAIN_MARKER = b"chaos relay: drain marker"


class UdpRelay:
    """A UDP relay that holds every datagram for a seeded random time, which reorders them.

    Counts what it received and forwarded, and per sequence stream (source, data or
    telemetry) how many datagrams it released behind one of a higher ``seq``: the most that
    the gateway can refuse as replays (each can also have been lost on the link after).
    While :meth:`hold` is in force nothing is released.
    """

    def __init__(
        self,
        inbound: socket.socket,
        outbound: socket.socket,
        target: tuple[str, int],
        rng: random.Random,
        max_delay_s: float,
    ) -> None:
        self._inbound = inbound
        self._outbound = outbound
        self._target = target
        self._rng = rng
        self._max_delay_s = max_delay_s
        self._queue: list[_Held] = []
        self._held = threading.Event()
        self._drained = threading.Event()
        self._highest: dict[tuple[str, bool], int] = {}
        self.received = 0
        self.forwarded = 0
        self.overtaken = 0
        self._thread = _Thread("udp-relay", self._run)
        inbound.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        inbound.settimeout(_TICK_S)

    @property
    def address(self) -> tuple[str, int]:
        address: tuple[str, int] = self._inbound.getsockname()
        return address

    def __enter__(self) -> UdpRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()
        self._inbound.close()
        self._outbound.close()

    def hold(self) -> None:
        """Release nothing until :meth:`release` (datagrams keep queueing)."""
        self._held.set()

    def release(self) -> None:
        self._held.clear()

    def pending(self) -> int:
        return len(self._queue)

    def drain(self, marker_socket: socket.socket, deadline_s: float = 20.0) -> None:
        """Return once every datagram sent to the relay before this call has been forwarded.

        ``marker_socket`` must be able to reach the relay (a UDP socket in its namespace).
        """
        self._drained.clear()
        marker_socket.sendto(_DRAIN_MARKER, self.address)  # queued behind the others
        deadline = time.monotonic() + deadline_s
        while not (self._drained.is_set() and not self._queue):
            assert time.monotonic() < deadline, "the UDP relay did not drain"
            self._thread.stopping.wait(_TICK_S)  # polling interval, bounded by the deadline

    def _run(self) -> None:
        index = itertools.count()
        while not self._thread.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                raw = self._inbound.recv(_RECV_BYTES)
                if raw == _DRAIN_MARKER:
                    self._drained.set()
                else:
                    self.received += 1
                    due = time.monotonic() + self._rng.uniform(0.0, self._max_delay_s)
                    heapq.heappush(self._queue, _Held(due, next(index), raw))
            now = time.monotonic()
            while self._queue and self._queue[0].due <= now and not self._held.is_set():
                self._forward(heapq.heappop(self._queue).raw)

    def _forward(self, raw: bytes) -> None:
        with contextlib.suppress(PacketError):  # only the collector's packets come here
            body = wire.parse_body(wire.open_frame(raw)[0])
            stream = (body.source, bool(body.flags & wire.FLAG_TELEMETRY))
            if body.seq < self._highest.get(stream, 0):
                self.overtaken += 1
            self._highest[stream] = max(body.seq, self._highest.get(stream, 0))
        self._outbound.sendto(raw, self._target)
        self.forwarded += 1


class TcpProxy:
    """A TCP proxy that delays every chunk by a seeded random time and may cut connections.

    ``connect`` opens the upstream socket (in whatever namespace it must live). With
    ``cut_probability`` p, each chunk coming back from upstream (an answer) is, with
    probability p, not forwarded: both connections are reset instead. The request got
    through and the answer is lost, the case a collector must resolve by resending the
    identical packet. When the upstream connect fails, the accepted connection is reset
    (``refuse_with_reset``, what a host with nothing behind the port does) or closed. Counts
    connections, cuts and refused upstream connects.
    """

    def __init__(
        self,
        listener: socket.socket,
        connect: Callable[[], socket.socket],
        rng: random.Random,
        *,
        max_delay_s: float = 0.0,
        cut_probability: float = 0.0,
        refuse_with_reset: bool = True,
    ) -> None:
        self._listener = listener
        self._refuse_with_reset = refuse_with_reset
        self._connect = connect
        self._seed = rng.getrandbits(64)
        self._max_delay_s = max_delay_s
        self._cut_probability = cut_probability
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.connections = 0
        self.cuts = 0
        self.refused = 0
        listener.settimeout(_TICK_S)
        listener.listen(64)
        self._thread = _Thread("tcp-proxy", self._accept_loop)

    @property
    def address(self) -> tuple[str, int]:
        address: tuple[str, int] = self._listener.getsockname()
        return address

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                _shut(sock)

    def _accept_loop(self) -> None:
        while not self._thread.stopping.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            downstream.settimeout(None)
            with self._lock:
                n = self.connections
                self.connections += 1
            # One stream of decisions per connection, so a run replays from its seed.
            rng = random.Random(self._seed + n)
            threading.Thread(target=self._serve, args=(downstream, rng), daemon=True).start()

    def _serve(self, downstream: socket.socket, rng: random.Random) -> None:
        """Connect upstream (a lossy link may take a SYN retransmission), then pump both ways."""
        try:
            upstream = self._connect()
        except OSError:
            with self._lock:
                self.refused += 1
            _shut(downstream, reset=self._refuse_with_reset)
            return
        pair = (downstream, upstream)
        with self._lock:
            self._open |= set(pair)
        threading.Thread(
            target=self._pump, args=(upstream, downstream, True, rng, pair), daemon=True
        ).start()
        self._pump(downstream, upstream, False, rng, pair)

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        answers: bool,
        rng: random.Random,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        stopping = self._thread.stopping
        try:
            while not stopping.is_set():
                chunk = src.recv(_RECV_BYTES)
                if not chunk:
                    break
                with self._lock:  # both directions of a connection share its rng
                    delay = rng.uniform(0.0, self._max_delay_s) if self._max_delay_s else 0.0
                    cut = answers and rng.random() < self._cut_probability
                if delay:
                    stopping.wait(delay)  # the injected delay itself
                if cut:
                    with self._lock:
                        self.cuts += 1
                    for sock in pair:
                        _shut(sock, reset=True)
                    return
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= set(pair)
            for sock in pair:
                _shut(sock)


def _shut(sock: socket.socket, *, reset: bool = False) -> None:
    """Close ``sock``, waking a thread blocked on it; ``reset`` sends RST instead of FIN."""
    with contextlib.suppress(OSError):
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# -- draw clients ------------------------------------------------------------------------


@dataclass
class Tally:
    """What one client got from one gateway life."""

    ok: int = 0
    short: int = 0
    bytes: int = 0
    failed: int = 0
    other: Counter[int] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)


class DrawClients:
    """``count`` threads drawing ``/api/random`` (binary) from ``url``, seeded, pausable.

    Every body received is kept (``received``) for the duplicate check. Answers are tallied
    per epoch (:attr:`epoch`, which the suite advances each time it starts a new gateway
    life while the clients are paused), so each life's served counter can be compared with
    exactly what the clients got from it.
    """

    def __init__(self, url: str, api_key: str, count: int, rng: random.Random) -> None:
        self.url = url
        self.api_key = api_key
        self.epoch = 0
        self.received: list[list[bytes]] = [[] for _ in range(count)]
        self.tallies: list[dict[int, Tally]] = [{} for _ in range(count)]
        self._gate = threading.Event()
        self._idle = [threading.Event() for _ in range(count)]
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._draw, args=(i, random.Random(rng.getrandbits(64))), daemon=True
            )
            for i in range(count)
        ]

    def __enter__(self) -> DrawClients:
        self._gate.set()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._gate.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def pause(self, deadline_s: float = 60.0) -> None:
        """Close the gate and return once every client has finished its request."""
        self._gate.clear()
        deadline = time.monotonic() + deadline_s
        for idle in self._idle:
            assert idle.wait(max(0.0, deadline - time.monotonic())), "a client did not pause"

    def resume(self) -> None:
        self._gate.set()

    def total(self, epoch: int | None = None) -> Tally:
        """The sum of every client's tally (of one epoch, or of all)."""
        total = Tally()
        for tallies in self.tallies:
            for e, t in list(tallies.items()):
                if epoch is None or e == epoch:
                    total.ok += t.ok
                    total.short += t.short
                    total.bytes += t.bytes
                    total.failed += t.failed
                    total.other += t.other
                    total.anomalies += t.anomalies
        return total

    def _draw(self, i: int, rng: random.Random) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30.0) as client:
            while not self._stopping.is_set():
                if not self._gate.is_set():
                    self._idle[i].set()
                    self._gate.wait()
                    continue
                self._idle[i].clear()
                if not self._gate.is_set():  # closed meanwhile: stay idle
                    continue
                tally = self.tallies[i].setdefault(self.epoch, Tally())
                n = 16 * rng.randint(1, 512)  # whole blocks: copies stay block-aligned
                if not self._draw_once(client, n, tally, self.received[i]):
                    self._stopping.wait(_PACE_S)  # pacing after a refusal, not a wait for one
            self._idle[i].set()

    @staticmethod
    def _draw_once(client: httpx.Client, n: int, tally: Tally, received: list[bytes]) -> bool:
        """One request; whether it was served."""
        try:
            response = client.get("/api/random", params={"bytes": n, "encoding": "binary"})
        except httpx.HTTPError as err:
            tally.failed += 1
            tally.anomalies.append(f"transport error {type(err).__name__}")
            return False
        if response.status_code == 200:
            tally.ok += 1
            tally.bytes += len(response.content)
            received.append(response.content)
            if len(response.content) != n:
                tally.anomalies.append(f"asked {n} bytes, got {len(response.content)}")
            return True
        if response.status_code == 503:
            tally.short += 1
            if "retry-after" not in response.headers:
                tally.anomalies.append("503 without Retry-After")
        else:
            tally.other[response.status_code] += 1
            tally.anomalies.append(f"{response.status_code}: {response.text[:200]}")
        return False


# -- accounting --------------------------------------------------------------------------


def repeated_blocks(bodies: list[bytes], block: int = 16) -> tuple[int, int]:
    """(blocks, repeats): how many whole ``block``-byte blocks were received, and how many of
    them had been received before, at any alignment.

    Every aligned block of every body goes into one set; a repeat is an aligned block already
    in it, or any unaligned window of a body equal to an aligned block: a run of at least
    ``2 * block - 1`` bytes served twice is caught wherever the two copies start.
    """
    seen: set[bytes] = set()
    repeats = 0
    for body in bodies:
        for i in range(0, len(body) - block + 1, block):
            chunk = body[i : i + block]
            repeats += chunk in seen
            seen.add(chunk)
    for body in bodies:
        for shift in range(1, block):
            for i in range(shift, len(body) - block + 1, block):
                repeats += body[i : i + block] in seen
    return len(seen), repeats


def instance_counts(samples: list[Any]) -> dict[str, Any]:
    """One gateway life's counters from a /metrics scrape, keyed for the report."""

    def total(name: str, **labels: str) -> int:
        return int(
            sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())
        )

    rejected = {
        s.labels["reason"]: int(s.value)
        for s in samples
        if s.name == "qrng_packets_rejected_total" and s.value
    }
    return {
        "served_bytes": total("qrng_bytes_served_total"),
        "received_bytes": total("qrng_bytes_received_total"),
        "available_bytes": total("qrng_buffer_bytes_available"),
        "dropped_bytes": {
            reason: total("qrng_bytes_dropped_total", reason=reason)
            for reason in ("overflow", "evicted", "state")
        },
        "packets_accepted": total("qrng_packets_accepted_total"),
        "packets_rejected": rejected,
        "sequence_gaps": total("qrng_sequence_gaps_total"),
        "random_200": total("qrng_requests_total", endpoint="random", status="200"),
        "random_503": total("qrng_requests_total", endpoint="random", status="503"),
    }


def connect_in_netns(
    ns: str | None, address: tuple[str, int], timeout_s: float = 10.0
) -> socket.socket:
    """A TCP connection to ``address`` made from namespace ``ns``.

    Raises:
        OSError: refused, unreachable or timed out.
    """
    sock = socket_in_netns(ns, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(address)
        sock.settimeout(None)
    except OSError:
        sock.close()
        raise
    return sock
