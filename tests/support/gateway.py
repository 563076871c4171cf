"""Helpers for suites that run a real ``qrng-dd gateway`` process on loopback.

Used by the gateway end-to-end suite and meant for the collector and MCP ones too:
:func:`start_gateway` runs the CLI with a clean ``QRNG_`` environment on a free port and waits
until it answers; :func:`push_packets` signs and pushes packets to it over real HTTP.

Readiness is polled (short interval, hard deadline), never slept for. The process's output
goes to temporary files, not pipes, so a chatty gateway can never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from qrng_dd.config import GatewaySettings, load
from qrng_dd.gateway.server import build_app
from qrng_dd.gateway.service import EntropyService
from qrng_dd.wire.packet import Packet, PacketKey, encode
from tests.conftest import KEY_HEX

#: The API keys of the in-process gateways the unit tests build (:func:`gateway_settings`).
API_KEY = "test-api-key-0123456789"
OTHER_KEY = "other-api-key-9876543210"


def gateway_settings(env: Mapping[str, str] | None = None) -> GatewaySettings:
    """Settings of an in-process gateway: the test HMAC key, both API keys, a rate limit no
    test reaches, one clock (no quiet start), no access log; ``env`` wins."""
    values = {
        "QRNG_HMAC_SECRET_KEY": KEY_HEX,
        "QRNG_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "QRNG_RATE_LIMIT": "100000",
        "QRNG_MAX_CLOCK_SKEW_S": "0",
        "QRNG_ACCESS_LOG": "false",
    }
    values.update(env or {})
    return load(GatewaySettings, values)


@contextlib.asynccontextmanager
async def asgi_client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on an in-process gateway with ``settings``: the one ASGI front, no
    server; an application error is answered as the front answers it, not raised."""
    transport = httpx.ASGITransport(
        app=build_app(EntropyService(settings)), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


STARTUP_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0
#: Generous: a loaded CI machine may stall a request for seconds; a timeout is a failure.
CLIENT_TIMEOUT_S = 30.0
_POLL_INTERVAL_S = 0.05
_PORT_ATTEMPTS = 3

_last_seq: dict[str, int] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing was bound to a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_command() -> list[str]:
    """The command line of ``qrng-dd gateway`` for this interpreter."""
    return [sys.executable, "-m", "qrng_dd.cli", "gateway"]


def clean_environ(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``QRNG_`` variable, plus ``overrides``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("QRNG_")}
    env.update(overrides)
    return env


def next_seq(source: str) -> int:
    """The next sequence number of ``source``, as a collector counts (DESIGN §3).

    The first one is the current time in microseconds, then one more per packet: gap-free,
    and above anything an earlier run handed out.
    """
    last = _last_seq.get(source)
    seq = int(time.time() * 1_000_000) if last is None else last + 1
    _last_seq[source] = seq
    return seq


def make_raw(
    key: PacketKey,
    data: bytes,
    *,
    source: str = "collector",
    dest: str = "gateway",
    flags: int = 1,
    seq: int | None = None,
    ts_us: int | None = None,
) -> bytes:
    """One encoded packet, fresh and next in its stream unless told otherwise.

    Telemetry (flag bit 2) is numbered on its own stream, as a collector does (DESIGN §3).
    """
    stream = f"{source}/telemetry" if flags & 2 else source
    packet = Packet(
        os.urandom(16),
        flags,
        source,
        dest,
        next_seq(stream) if seq is None else seq,
        int(time.time() * 1_000_000) if ts_us is None else ts_us,
        data,
    )
    return encode(packet, key)


@dataclass
class RunningGateway:
    """A gateway process that answered its first request."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    api_key: str
    hmac_hex: str
    ssl_context: ssl.SSLContext | None = None
    stderr_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def key(self) -> PacketKey:
        return PacketKey.from_hex(self.hmac_hex)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        """A client for this gateway (trusting its CA when it speaks TLS)."""
        verify: ssl.SSLContext | bool = self.ssl_context or True
        return httpx.Client(base_url=self.url, verify=verify, timeout=CLIENT_TIMEOUT_S, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An async client for this gateway."""
        verify: ssl.SSLContext | bool = self.ssl_context or True
        return httpx.AsyncClient(
            base_url=self.url, verify=verify, timeout=CLIENT_TIMEOUT_S, **kwargs
        )

    def status(self) -> dict[str, Any]:
        """``GET /api/status`` with this gateway's API key; asserts it answered 200."""
        with self.client() as client:
            response = client.get("/api/status", headers=self.auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        if self.stderr_file is None:
            return ""
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")


def udp_socket_drops(pid: int, port: int) -> int:
    """Datagrams the kernel dropped on ``pid``'s UDP socket bound to ``port`` (full buffer)."""
    with open(f"/proc/{pid}/net/udp", encoding="ascii") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[-1])
    msg = f"no UDP socket on port {port} in /proc/{pid}/net/udp"
    raise AssertionError(msg)


def process_tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and all its children (granian serves from a worker); [] once it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_connections(pid: int, kind: str = "inet") -> list[Any]:
    """Sockets of process ``pid`` and of all its children (granian serves from a worker)."""
    connections: list[Any] = []
    for process in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            connections += process.net_connections(kind=kind)
    return connections


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or a child) has a listening TCP socket on ``port``."""
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in tree_connections(pid, "tcp")
    )


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    ssl_context: ssl.SSLContext | None = None,
    deadline_s: float = STARTUP_DEADLINE_S,
) -> None:
    """Poll ``GET /health`` until it answers at all (200 or 503: an empty pool is unhealthy).

    Raises:
        RuntimeError: the process exited, or the deadline passed.
    """
    deadline = time.monotonic() + deadline_s
    port = httpx.URL(url).port
    assert port is not None, f"{url} names no port"
    verify: ssl.SSLContext | bool = ssl_context or True
    with httpx.Client(verify=verify, timeout=1.0) as client:
        while True:
            if proc.poll() is not None:
                msg = f"gateway exited with status {proc.returncode} before it was ready"
                raise RuntimeError(msg)
            # Only our process listening on the port counts: a stranger that grabbed the
            # port first must not pass for the gateway.
            if listens(proc.pid, port):
                try:
                    response = client.get(f"{url}/health")
                except httpx.TransportError:
                    pass
                else:
                    if response.status_code in (200, 503):
                        return
            if time.monotonic() > deadline:
                msg = f"gateway at {url} not ready after {deadline_s} s"
                raise RuntimeError(msg)
            time.sleep(_POLL_INTERVAL_S)  # polling interval, bounded by the deadline


def wait_until(
    predicate: Callable[[], bool], deadline_s: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` (short interval, hard deadline) until it holds.

    Raises:
        AssertionError: it did not hold within ``deadline_s``.
    """
    deadline = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {deadline_s} s"
        time.sleep(_POLL_INTERVAL_S)  # polling interval, bounded by the deadline


def stop(proc: subprocess.Popen[bytes], deadline_s: float = STOP_DEADLINE_S) -> int:
    """SIGTERM, then wait; SIGKILL only if the deadline passes. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


@contextlib.contextmanager
def start_gateway(
    env_overrides: Mapping[str, str] | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[RunningGateway]:
    """Run ``qrng-dd gateway`` on 127.0.0.1 and a free port; stop it on exit.

    ``env_overrides`` win over the defaults chosen here (fresh HMAC key and API key, no access
    log, warnings only). With ``QRNG_TLS_CERT_FILE`` set, pass the ``ssl_context`` that
    trusts its certificate (and carries a client certificate if one is required). If another
    process takes the free port between our probe and the gateway's bind, a new port is tried.
    ``command`` replaces the ``qrng-dd gateway`` command line (the benchmark serves the same app
    by another server); it must listen where ``QRNG_PORT`` in ``env_overrides`` says.
    """
    overrides = dict(env_overrides or {})
    fixed_port = overrides.get("QRNG_PORT")
    hmac_hex = overrides.get("QRNG_HMAC_SECRET_KEY") or secrets.token_hex(32)
    api_key = overrides.get("QRNG_API_KEYS", "").split(",")[0] or secrets.token_urlsafe(24)
    for attempt in range(_PORT_ATTEMPTS):
        port = int(fixed_port or free_port())
        env = clean_environ(
            {
                "QRNG_HOST": "127.0.0.1",
                "QRNG_PORT": str(port),
                "QRNG_HMAC_SECRET_KEY": hmac_hex,
                "QRNG_API_KEYS": api_key,
                "QRNG_ACCESS_LOG": "false",
                "QRNG_LOG_LEVEL": "warning",
                # Every process here shares one clock: no skew to allow, so no quiet start.
                "QRNG_MAX_CLOCK_SKEW_S": "0",
            }
        )
        env.update(overrides)
        scheme = "https" if env.get("QRNG_TLS_CERT_FILE") else "http"
        url = f"{scheme}://127.0.0.1:{port}"
        with (
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
            subprocess.Popen(
                list(command or gateway_command()), env=env, stdout=stdout, stderr=stderr
            ) as proc,
        ):
            gateway = RunningGateway(url, port, proc, api_key, hmac_hex, ssl_context, stderr)
            try:
                try:
                    wait_ready(url, proc, ssl_context)
                except RuntimeError as err:
                    stdout.seek(0)
                    output = stdout.read().decode(errors="replace") + gateway.stderr()
                    lost_port = proc.poll() is not None and "cannot listen" in output
                    if lost_port and not fixed_port and attempt + 1 < _PORT_ATTEMPTS:
                        continue
                    raise RuntimeError(f"{err}\n--- output ---\n{output}") from None
                yield gateway
                return
            finally:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stop(proc)


def scrape(url: str) -> list[Sample]:
    """Every sample of ``GET {url}/metrics`` (Prometheus text), parsed."""
    text = httpx.get(f"{url}/metrics", timeout=CLIENT_TIMEOUT_S).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` (``…_total`` for a counter) that carry ``labels``."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def push_packets(
    url: str,
    key: PacketKey,
    n: int,
    size: int,
    source: str = "collector",
    dest: str = "gateway",
    *,
    client: httpx.Client | None = None,
    flags: int = 1,
) -> list[bytes]:
    """Push ``n`` fresh packets of ``size`` random bytes each; return the data pushed.

    Raises:
        AssertionError: the gateway did not answer 200 to one of them.
    """
    pushed: list[bytes] = []
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(httpx.Client(timeout=CLIENT_TIMEOUT_S))
        for _ in range(n):
            data = os.urandom(size)
            raw = make_raw(key, data, source=source, dest=dest, flags=flags)
            response = client.post(f"{url}/push", content=raw)
            assert response.status_code == 200, response.text
            pushed.append(data)
    return pushed
