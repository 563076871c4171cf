"""``qrng-dd bench``: start what is measured on loopback, run every case, print one table.

Method (DESIGN §11)
-------------------
Speed is measured here, never in a timed test, and always as **ratios taken in the same run**:
absolute figures on a shared two-core machine move with the weather, ratios against a ceiling
measured minutes earlier on the same machine move much less. The ceiling is a bare ASGI app
(:func:`bare_app`, 64 bytes per answer, no routing, no work) served by granian and by uvicorn
(uvloop + httptools); the better of the two is "the fastest Python can answer HTTP here", and
every small-request figure of the gateway is also printed as a share of it. The seed's figures
(P50 3.62 ms, P99 9.13 ms, 438 req/s) are printed as a speed-up factor.

Two kinds of load are used, on purpose:

- **Closed loop** (wrk, 1 thread, 32 keep-alive connections) for *saturated throughput*: each
  connection sends its next request when the previous answer arrives, so the server sets the
  pace and the figure is the most it can do. Its latencies are worthless as latencies: when the
  server stalls, wrk simply stops sending, and the requests it "would have" sent are never
  measured (coordinated omission).
- **Open loop** (:func:`_open_loop`, a separate process) for *latency*: requests are
  *scheduled* at a fixed rate (1,000 req/s: one every millisecond) whatever the server does,
  queued when every connection is busy, and each latency is taken from the request's
  **scheduled** time, not from the moment it was written to a socket. A 20 ms stall therefore
  shows as twenty requests late by up to 20 ms, as users would see it, instead of one. The
  scheduler spins (``sleep(0)``) for the last millisecond before each due time because event
  loop timers only have millisecond resolution; the same generator is run against the bare app
  so its own floor is visible next to the gateway's figure. (wrk2, which does this in C, is not
  packaged for Debian.)

Load generators and the measured servers are separate processes, each with its own core where
possible; with two cores, a run measures one server core against one client core. Everything
needed is started here (gateway, appliance simulator, collector, bare servers) with fresh keys,
on ephemeral loopback ports, and stopped at the end. The pool is pre-filled (and topped up
between bulk slices) so small-request figures measure the gateway, not the entropy supply;
ingest pushes pre-generated, valid, fresh packets (one ``source`` per connection, ``seq``
increasing) under the ``replace`` policy so the pool never answers 507.

MB means 10^6 bytes, GB 10^9. Results go to a JSON file (``--output``, default
``bench-results.json``) with the machine, the plan, every row and the load average before and
after; ``docs/BENCHMARKS.md`` explains a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, Final, TypeVar

T = TypeVar("T")

#: The seed's figures (DESIGN §11): P50 and P99 in ms, burst throughput in req/s.
SEED: Final = {"p50_ms": 3.62, "p99_ms": 9.13, "req_s": 438.0}
MB: Final = 1_000_000
KIB: Final = 1024
MIB: Final = 1024 * 1024
HOST: Final = "127.0.0.1"
SMALL_PATHS: Final = ("/api/random?bytes=32", "/api/integers?count=10", "/api/uuid")
BULK_PATH: Final = "/api/random?bytes=65536&encoding=binary"
BULK_BYTES: Final = 65_536
LATENCY_RATE: Final = 1000.0
UDP_PAYLOAD: Final = 1200
CASES: Final = (
    "ceiling",
    "small",
    "latency",
    "accesslog",
    "bulk",
    "ingest",
    "e2e",
    "udp",
    "cpu",
    "rss",
    "granian",
)

# -- the ceiling: a bare ASGI app ----------------------------------------------------------------

_BARE_BODY: Final = b"0123456789abcdef" * 4
_BARE_HEADERS: Final = [(b"content-type", b"application/octet-stream"), (b"content-length", b"64")]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ceiling: 64 bytes for any HTTP request, nothing else (lifespan acknowledged)."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": _BARE_HEADERS})
        await send({"type": "http.response.body", "body": _BARE_BODY})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def gateway_app() -> Any:
    """ASGI factory: the real gateway app from ``QRNG_*``, for serving it by granian (what-if)."""
    from qrng_dd import logs
    from qrng_dd.config import GatewaySettings, load
    from qrng_dd.gateway.server import build_app
    from qrng_dd.gateway.service import EntropyService

    settings = load(GatewaySettings)
    logs.configure(settings.log_format, settings.log_level)
    return build_app(EntropyService(settings))


# -- results -------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table (and of the JSON ``results``)."""

    case: str
    metric: str
    value: float | None
    unit: str
    target: str = ""
    verdict: str = ""  # PASS, MISS or "" (informational)
    x_ceiling: float | None = None  # share of the best bare-ASGI figure
    x_seed: float | None = None  # speed-up over the seed (>1 is better)
    errors: int | None = None
    note: str = ""


@dataclass
class Plan:
    """Durations and sizes of one run."""

    quick: bool
    wrk_seconds: int
    warmup_seconds: int
    connections: int
    threads: int
    latency_seconds: float
    latency_connections: int
    bulk_slices: int
    bulk_seconds: int
    main_pool_bytes: int
    ingest_seconds: float
    ingest_connections: int
    ingest_budget_bytes: int
    e2e_seconds: float
    e2e_appliances: int
    udp_rates_mb_s: list[float]
    udp_seconds: float
    cpu_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 2, 1, 32, 1, 3.0, 16, 1, 1, 512 * MIB, 1.5, 8, 64 * MIB, 4.0, 1,
                       [60.0], 1.0, 0.2)  # fmt: skip
        return cls(False, 5, 1, 32, 1, 10.0, 16, 3, 2, 2048 * MIB, 3.0, 8, 768 * MIB, 10.0, 1,
                   [30.0, 60.0, 100.0], 3.0, 1.0)  # fmt: skip


@dataclass
class Report:
    """Everything a run produced."""

    plan: Plan
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    ceiling: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.case}: {_fmt(row.value)} {row.unit} {row.verdict}".rstrip(), flush=True)
        return row

    @property
    def best_ceiling(self) -> float | None:
        return max(self.ceiling.values()) if self.ceiling else None

    def to_json(self) -> dict[str, Any]:
        verdicts = Counter(row.verdict for row in self.rows if row.verdict)
        return {
            "schema": 1,
            "machine": self.machine,
            "plan": asdict(self.plan),
            "ceiling": {**self.ceiling, "best": self.best_ceiling},
            "seed": dict(SEED),
            "results": [asdict(row) for row in self.rows],
            "summary": {
                "pass": verdicts.get("PASS", 0),
                "miss": verdicts.get("MISS", 0),
                "failures": self.failures,
            },
            "details": self.details,
            "commands": self.commands,
        }


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def format_table(report: Report) -> str:
    """The results as one fixed-width text table."""
    header = ("case", "metric", "value", "unit", "target", "verdict", "x ceiling", "x seed",
              "errors", "note")  # fmt: skip
    lines = [header]
    for r in report.rows:
        lines.append(
            (
                r.case,
                r.metric,
                _fmt(r.value),
                r.unit,
                r.target,
                r.verdict,
                "-" if r.x_ceiling is None else f"{r.x_ceiling:.2f}",
                "-" if r.x_seed is None else f"{r.x_seed:.1f}x",
                "-" if r.errors is None else str(r.errors),
                r.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for n, line in enumerate(lines):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append(" | ".join([*cells, line[-1]]).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 4)
    best = report.best_ceiling
    if best is not None:
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in report.ceiling.items())
        out.append(f"ceiling (bare ASGI, req/s): {parts}; best {best:,.0f}")
    return "\n".join(out)


def write_results(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, Python and server versions, load average."""
    from importlib import metadata

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions: dict[str, str | None] = {}
    for dist in ("uvicorn", "granian", "starlette", "uvloop", "httptools", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    wrk = shutil.which("wrk")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "wrk": wrk,
        "load_before": list(os.getloadavg()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- processes -----------------------------------------------------------------------------------


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _bin(name: str) -> list[str]:
    """A console script of this venv, else the module through this interpreter."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return [str(path)]
    module = {"qrng-dd": "qrng_dd.cli"}.get(name, name)
    return [sys.executable, "-m", module]


class Service:
    """One process we started, with its log in a temporary file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, logdir: Path):
        self.name = name
        self.port = port
        self.log_path = logdir / f"{name}-{port}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - our own argv, never a shell
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, path: str = "/", timeout: float = 30.0) -> None:
        """Wait until the port answers HTTP (any status). Raises RuntimeError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            try:
                _http(self.port, "GET", path, timeout=1.0)
            except OSError:
                time.sleep(0.05)
                continue
            return
        raise RuntimeError(f"{self.name} did not answer on port {self.port}: {self.tail()}")

    def tail(self, n: int = 600) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-n:].decode(errors="replace").strip()
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _http(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(port: int) -> dict[str, dict[str, float]]:
    """The gateway's ``/metrics`` as ``{name: {labels: value}}``."""
    _, text = _http(port, "GET", "/metrics")
    out: dict[str, dict[str, float]] = {}
    for line in text.decode().splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            out.setdefault(match[1], {})[match[2] or ""] = float(match[3])
    return out


def _metric_sum(metrics: dict[str, dict[str, float]], name: str, label: str = "") -> float:
    return sum(v for k, v in metrics.get(name, {}).items() if label in k)


@dataclass
class Keys:
    hmac_hex: str = field(default_factory=lambda: secrets.token_hex(32))
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("QRNG_", "GRANIAN_"))}


def gateway_env(
    keys: Keys,
    port: int,
    *,
    buffer_bytes: int,
    access_log: bool = False,
    log_level: str = "warning",
    udp_port: int | None = None,
) -> dict[str, str]:
    env = _clean_env()
    env.update(
        QRNG_HMAC_SECRET_KEY=keys.hmac_hex,
        QRNG_API_KEYS=keys.api_key,
        QRNG_HOST=HOST,
        QRNG_PORT=str(port),
        QRNG_RATE_LIMIT="1000000",
        QRNG_BUFFER_SIZE=str(buffer_bytes),
        QRNG_BUFFER_OVERFLOW_POLICY="replace",
        QRNG_ACCESS_LOG="true" if access_log else "false",
        QRNG_LOG_LEVEL=log_level,
        QRNG_LOG_FORMAT="json",
        QRNG_MAX_CLOCK_SKEW_S="0",  # one machine, one clock: no quiet start
    )
    if udp_port is not None:
        env["QRNG_UDP_LISTEN"] = f"{HOST}:{udp_port}"
    return env


class Bench:
    """Starts services, runs cases, collects rows."""

    def __init__(self, plan: Plan, report: Report, stack: contextlib.ExitStack) -> None:
        self.plan = plan
        self.report = report
        self.stack = stack
        self.logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qrng-bench-")))
        self.keys = Keys()
        self.wrk = shutil.which("wrk")

    # -- starting things ----------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Service:
        service = Service(name, argv, env, port, self.logdir)
        self.stack.callback(service.stop)
        return service

    def gateway(
        self,
        *,
        buffer_bytes: int,
        access_log: bool = False,
        log_level: str = "warning",
        udp_port: int | None = None,
        server: str = "uvicorn",
    ) -> Service:
        port = _free_port()
        env = gateway_env(self.keys, port, buffer_bytes=buffer_bytes, access_log=access_log,
                          log_level=log_level, udp_port=udp_port)  # fmt: skip
        if server == "granian":
            argv = [*_bin("granian"), "--interface", "asgi", "--workers", "1", "--host", HOST,
                    "--port", str(port), "--no-ws", "--log-level", "warning", "--factory",
                    "qrng_dd.bench:gateway_app"]  # fmt: skip
        else:
            argv = [*_bin("qrng-dd"), "gateway"]
        service = self.start(f"gateway-{server}", argv, env, port)
        service.wait_http("/health")
        return service

    def bare(self, server: str) -> Service:
        port = _free_port()
        if server == "granian":
            argv = [*_bin("granian"), "--interface", "asgi", "--workers", "1", "--host", HOST,
                    "--port", str(port), "--no-ws", "--log-level", "warning",
                    "qrng_dd.bench:bare_app"]  # fmt: skip
        else:
            argv = [*_bin("uvicorn"), "qrng_dd.bench:bare_app", "--host", HOST, "--port",
                    str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                    "--log-level", "warning", "--lifespan", "on"]  # fmt: skip
        self.report.commands.append(" ".join(argv))
        service = self.start(f"bare-{server}", argv, _clean_env(), port)
        service.wait_http("/")
        return service

    def fill(self, gateway: Service, nbytes: int | None = None) -> int:
        """Top the gateway's pool up to capacity (or push ``nbytes``); return bytes pushed."""
        if nbytes is None:
            status = self.status(gateway)
            nbytes = int(status["buffer_capacity_bytes"]) - int(status["buffer_bytes_available"])
        if nbytes <= 0:
            return 0
        result = in_process(_fill_worker, gateway.port, self.keys.hmac_hex, nbytes, timeout=600)
        if result["errors"]:
            raise RuntimeError(f"pool fill refused: {result['status']}")
        return nbytes

    def status(self, gateway: Service) -> dict[str, Any]:
        code, body = _http(gateway.port, "GET", "/api/status", self.keys.auth)
        if code != 200:
            raise RuntimeError(f"/api/status answered {code}")
        status: dict[str, Any] = json.loads(body)
        return status

    # -- load ---------------------------------------------------------------------------------

    def run_wrk(
        self,
        port: int,
        path: str,
        seconds: int,
        *,
        auth: bool = True,
        between: Callable[[], object] | None = None,
    ) -> dict[str, Any]:
        """Saturated closed-loop run: a short untimed warm-up, ``between()``, the timed run."""
        if self.wrk is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        url = f"http://{HOST}:{port}{path}"
        base = [self.wrk, f"-t{self.plan.threads}", f"-c{self.plan.connections}"]
        if auth:
            base += ["-H", f"Authorization: Bearer {self.keys.api_key}"]
        if self.plan.warmup_seconds:
            _wrk_once([*base, f"-d{self.plan.warmup_seconds}s", url], self.plan.warmup_seconds)
        if between is not None:
            between()
        argv = [*base, f"-d{seconds}s", url]
        printable = " ".join(argv).replace(self.keys.api_key, "$API_KEY")
        if printable not in self.report.commands:
            self.report.commands.append(printable)
        return _wrk_once(argv, seconds)

    def open_loop(self, port: int, path: str, *, auth: bool = True) -> dict[str, Any]:
        plan = self.plan
        header = f"Authorization: Bearer {self.keys.api_key}\r\n" if auth else ""
        result: dict[str, Any] = in_process(
            _open_loop_worker, port, path, header, LATENCY_RATE, plan.latency_seconds, 1.0,
            plan.latency_connections, timeout=plan.latency_seconds + 60,
        )  # fmt: skip
        return result


def _wrk_once(argv: list[str], seconds: int) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - our own argv
        argv, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, requests, seconds and errors (non-2xx/3xx plus socket errors) from wrk."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if rps is None or total is None:
        raise RuntimeError(f"cannot read wrk output: {text[-400:]}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total[3]]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = sum(int(x) for x in sock.groups()) if sock else 0
    return {
        "rps": float(rps[1]),
        "requests": int(total[1]),
        "seconds": float(total[2]) * scale,
        "non2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": socket_errors,
        "errors": (int(non2xx[1]) if non2xx else 0) + socket_errors,
    }


# -- worker processes ----------------------------------------------------------------------------


def in_process(fn: Callable[..., T], *args: Any, timeout: float) -> T:
    """Run ``fn(*args)`` in a fresh (spawned) process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_entry, args=(fn, args, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"{fn.__name__} did not finish in {timeout:.0f} s")
        kind, value = parent.recv()
    except EOFError as err:
        raise RuntimeError(f"{fn.__name__} died (exit code {proc.exitcode})") from err
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    if kind == "error":
        raise RuntimeError(f"{fn.__name__}: {value}")
    result: T = value
    return result


def _worker_entry(fn: Callable[..., Any], args: tuple[Any, ...], conn: Connection) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as err:  # reported to the parent, which raises
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop if installed (a faster client), else on asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
    if match:
        await reader.readexactly(int(match[1]))
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _close_all(streams: Sequence[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in streams:
        writer.close()
    for _, writer in streams:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _open_loop_worker(
    port: int, path: str, header: str, rate: float, seconds: float, warmup: float, conns: int
) -> dict[str, Any]:
    return _run_async(_open_loop(port, path, header, rate, seconds, warmup, conns))


async def _open_loop(
    port: int, path: str, header: str, rate: float, seconds: float, warmup: float, conns: int
) -> dict[str, Any]:
    """Open-loop load at ``rate`` req/s; latency from each request's *scheduled* time."""
    import numpy as np

    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{header}\r\n".encode()
    streams = [await asyncio.open_connection(HOST, port) for _ in range(conns)]
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    total = int(rate * (warmup + seconds))
    clock = time.perf_counter
    t0 = clock() + 0.05
    measure_from = t0 + warmup
    latencies: list[float] = []
    send_lag: list[float] = []
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    async def dispatch() -> None:
        i = 0
        while i < total:
            now = clock()
            due = min(total, int((now - t0) * rate) + 1) if now >= t0 else 0
            while i < due:
                queue.put_nowait(t0 + i / rate)
                i += 1
            wait = t0 + i / rate - clock()
            # Timers have ~1 ms resolution: sleep until 1.5 ms before, then spin.
            await asyncio.sleep(wait - 0.0015 if wait > 0.002 else 0)
        for _ in streams:
            queue.put_nowait(None)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (scheduled := await queue.get()) is not None:
            sent = clock()
            try:
                writer.write(request)
                status = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                failures.append(f"{type(err).__name__}: {err}")
                return
            if scheduled >= measure_from:
                latencies.append(clock() - scheduled)
                send_lag.append(sent - scheduled)
                statuses[status] += 1

    tasks = [asyncio.ensure_future(connection(r, w)) for r, w in streams]
    await asyncio.wait_for(dispatch(), warmup + seconds + 5)
    _done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    await _close_all(streams)
    expected = total - int(rate * warmup)
    lat = np.array(latencies) * 1000.0
    lag = np.array(send_lag) * 1000.0 if send_lag else np.zeros(1)
    ok = statuses.get(200, 0)

    def pct(q: float) -> float | None:
        return float(np.percentile(lat, q)) if lat.size else None

    return {
        "rate": rate,
        "seconds": seconds,
        "expected": expected,
        "completed": int(lat.size),
        "errors": expected - ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": float(lat.max()) if lat.size else None,
        "send_lag_p99_ms": float(np.percentile(lag, 99)),
        "failures": failures[:5],
    }


def _make_packets(
    key_hex: str, source: str, count: int, size: int, *, encrypted: bool = True, seq0: int = 1
) -> list[bytes]:
    from qrng_dd.wire.packet import FLAG_ENCRYPTED, Packet, PacketKey, encode

    key = PacketKey.from_hex(key_hex)
    flags = FLAG_ENCRYPTED if encrypted else 0
    data = os.urandom(size)
    # seq and ts_us both advance by one per packet, as a collector's do: a missing packet is
    # then a gap (seq jumped by no more than the clock), never taken for a collector restart.
    ts_us = int(time.time() * 1_000_000)
    return [
        encode(Packet(os.urandom(16), flags, source, "gateway", seq0 + i, ts_us + i, data), key)
        for i in range(count)
    ]


def _post(port: int, raw: bytes) -> bytes:
    head = (
        f"POST /push HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def _fill_worker(port: int, key_hex: str, nbytes: int) -> dict[str, Any]:
    """Push ``nbytes`` of unencrypted 1 MiB packets (prefill; not a measurement)."""

    async def main() -> dict[str, Any]:
        from qrng_dd.wire.packet import MAX_DATA_BYTES

        count = -(-nbytes // MAX_DATA_BYTES)
        statuses: Counter[int] = Counter()
        source = f"fill-{os.getpid()}-{time.monotonic_ns()}"
        reader, writer = await asyncio.open_connection(HOST, port)
        done = 0
        while done < count:
            batch = _make_packets(key_hex, source, min(64, count - done), MAX_DATA_BYTES,
                                  encrypted=False, seq0=done + 1)  # fmt: skip
            for raw in batch:
                writer.write(_post(port, raw))
                statuses[await _read_response(reader)] += 1
            done += len(batch)
        await _close_all([(reader, writer)])
        errors = sum(v for k, v in statuses.items() if k != 200)
        return {"packets": count, "errors": errors, "status": dict(statuses)}

    return _run_async(main())


def _ingest_worker(
    port: int, key_hex: str, size: int, per_conn: int, conns: int, seconds: float
) -> dict[str, Any]:
    """Pre-generate packets, then POST them on ``conns`` keep-alive connections."""
    started = time.perf_counter()
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
    warm = max(1, per_conn // 20)
    lists = [_make_packets(key_hex, f"ingest-{tag}-{c}", per_conn, size) for c in range(conns)]
    generated = time.perf_counter() - started

    async def main() -> dict[str, Any]:
        statuses: Counter[int] = Counter()
        streams = [await asyncio.open_connection(HOST, port) for _ in range(conns)]
        sent = [0] * conns

        async def push(c: int, stop_at: int, deadline: float) -> None:
            reader, writer = streams[c]
            while sent[c] < stop_at and time.perf_counter() < deadline:
                writer.write(_post(port, lists[c][sent[c]]))
                statuses[await _read_response(reader)] += 1
                sent[c] += 1

        far = time.perf_counter() + 3600
        await asyncio.gather(*(push(c, warm, far) for c in range(conns)))
        statuses.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(push(c, per_conn, t0 + seconds) for c in range(conns)))
        elapsed = time.perf_counter() - t0
        await _close_all(streams)
        ok = statuses.get(200, 0)
        return {
            "size": size,
            "packets": ok,
            "errors": sum(statuses.values()) - ok,
            "status": {str(k): v for k, v in statuses.items()},
            "seconds": elapsed,
            "bytes_per_s": ok * size / elapsed,
            "packets_per_s": ok / elapsed,
            "generated": per_conn * conns,
            "generate_seconds": generated,
            "ran_out": all(s >= per_conn for s in sent),
        }

    return _run_async(main())


def _udp_worker(
    port: int, key_hex: str, source: str, rate_mb_s: float, seconds: float
) -> dict[str, Any]:
    """Send pre-built 1200-byte-payload datagrams, paced to ``rate_mb_s``; never read."""
    count = max(1, int(rate_mb_s * MB * seconds / UDP_PAYLOAD))
    t_gen = time.perf_counter()
    packets = _make_packets(key_hex, source, count, UDP_PAYLOAD)
    generated = time.perf_counter() - t_gen
    interval = UDP_PAYLOAD / (rate_mb_s * MB)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * MIB)
    sock.connect((HOST, port))
    send_errors = 0
    clock = time.perf_counter
    t0 = clock()
    i = 0
    while i < count:
        due = min(count, int((clock() - t0) / interval) + 1)
        while i < due:
            try:
                sock.send(packets[i])
            except OSError:
                send_errors += 1
            i += 1
        ahead = t0 + i * interval - clock()
        if ahead > 0.001:
            time.sleep(ahead - 0.0005)
    elapsed = clock() - t0
    sock.close()
    return {
        "sent": count,
        "send_errors": send_errors,
        "seconds": elapsed,
        "offered_mb_s": count * UDP_PAYLOAD / elapsed / MB,
        "generate_seconds": generated,
        "datagram_bytes": len(packets[0]),
    }


# -- cases ---------------------------------------------------------------------------------------


def case_ceiling(b: Bench) -> None:
    for server in ("granian", "uvicorn"):
        service = b.bare(server)
        result = b.run_wrk(service.port, "/", b.plan.wrk_seconds, auth=False)
        b.report.ceiling[server] = result["rps"]
        b.report.details[f"ceiling_{server}"] = result
        b.report.add(Row(f"ceiling: bare ASGI on {server}", "req/s", result["rps"], "req/s",
                         errors=result["errors"], x_ceiling=None,
                         note="wrk -t1 -c32"))  # fmt: skip
        if server == "granian" and "latency" in b.report.details.get("_cases", []):
            lat = b.open_loop(service.port, "/", auth=False)
            b.report.details["ceiling_granian_latency"] = lat
            b.report.add(Row("ceiling: bare ASGI on granian @1000 req/s", "P99", lat["p99_ms"],
                             "ms", errors=lat["errors"],
                             note=f"P50 {_fmt(lat['p50_ms'])} ms; generator floor"))  # fmt: skip
        service.stop()


def _small_row(b: Bench, case: str, result: dict[str, Any], note: str = "") -> None:
    best = b.report.best_ceiling
    share = result["rps"] / best if best else None
    ok = None if share is None else (share >= 0.5 and result["errors"] == 0)
    b.report.add(Row(case, "req/s", result["rps"], "req/s", ">= 50% of ceiling, 0 errors",
                     _verdict(ok), share, result["rps"] / SEED["req_s"], result["errors"],
                     note))  # fmt: skip


def case_small_and_latency(b: Bench, cases: set[str]) -> None:
    gateway = b.gateway(buffer_bytes=b.plan.main_pool_bytes)
    b.fill(gateway)
    if "small" in cases:
        for path in SMALL_PATHS:
            b.fill(gateway)
            result = b.run_wrk(gateway.port, path, b.plan.wrk_seconds,
                               between=lambda: b.fill(gateway))  # fmt: skip
            b.report.details[f"small {path}"] = result
            _small_row(b, f"small {path}", result, "access log off")
    if "latency" in cases:
        for path in SMALL_PATHS:
            b.fill(gateway)
            lat = b.open_loop(gateway.port, path)
            b.report.details[f"latency {path}"] = lat
            p99 = lat["p99_ms"]
            ok = p99 is not None and p99 <= 2.0 and lat["errors"] == 0
            b.report.add(Row(f"latency {path} @1000 req/s", "P99", p99, "ms", "<= 2 ms",
                             _verdict(ok), None, SEED["p99_ms"] / p99 if p99 else None,
                             lat["errors"],
                             f"P50 {_fmt(lat['p50_ms'])} ({_fmt(SEED['p50_ms'] / lat['p50_ms'])}x"
                             f" seed), P95 {_fmt(lat['p95_ms'])}, max {_fmt(lat['max_ms'])}"
                             ))  # fmt: skip
    if "bulk" in cases:
        total_requests = 0
        total_seconds = 0.0
        errors = 0
        for _ in range(b.plan.bulk_slices):
            b.fill(gateway)
            # The warm-up drains the pool too: top it up again before the timed slice.
            result = b.run_wrk(gateway.port, BULK_PATH, b.plan.bulk_seconds,
                               between=lambda: b.fill(gateway))  # fmt: skip
            total_requests += result["requests"]
            total_seconds += result["seconds"]
            errors += result["errors"]
        mb_s = total_requests * BULK_BYTES / total_seconds / MB
        b.report.details["bulk"] = {"requests": total_requests, "seconds": total_seconds,
                                    "errors": errors, "mb_s": mb_s}  # fmt: skip
        b.report.add(Row("bulk /api/random?bytes=65536&encoding=binary", "MB/s", mb_s, "MB/s",
                         ">= 1000 MB/s", _verdict(mb_s >= 1000 and errors == 0), errors=errors,
                         note=f"{b.plan.bulk_slices} x {b.plan.bulk_seconds} s, pool refilled "
                         "before each"))  # fmt: skip
    gateway.stop()


def case_accesslog(b: Bench) -> None:
    path = SMALL_PATHS[0]
    for on in (False, True):
        gateway = b.gateway(buffer_bytes=256 * MIB, access_log=on,
                            log_level="info" if on else "warning")  # fmt: skip
        b.fill(gateway)
        result = b.run_wrk(gateway.port, path, b.plan.wrk_seconds)
        log_bytes = gateway.log_path.stat().st_size
        b.report.details[f"accesslog_{on}"] = {**result, "log_bytes": log_bytes}
        state = "on (level info)" if on else "off"
        _small_row(b, f"access log {state}: {path}", result,
                   f"log written: {log_bytes / MB:.1f} MB")  # fmt: skip
        gateway.stop()
    off = b.report.details["accesslog_False"]["rps"]
    on_rps = b.report.details["accesslog_True"]["rps"]
    b.report.add(Row("access log cost", "slowdown", 100 * (1 - on_rps / off), "%",
                     note="1 - on/off for /api/random?bytes=32"))  # fmt: skip


def case_granian_gateway(b: Bench) -> None:
    gateway = b.gateway(buffer_bytes=256 * MIB, server="granian")
    b.fill(gateway)
    result = b.run_wrk(gateway.port, SMALL_PATHS[0], b.plan.wrk_seconds)
    b.report.details["whatif_granian"] = result
    best = b.report.best_ceiling
    b.report.add(Row(f"what-if: gateway app on granian {SMALL_PATHS[0]}", "req/s", result["rps"],
                     "req/s", x_ceiling=result["rps"] / best if best else None,
                     x_seed=result["rps"] / SEED["req_s"], errors=result["errors"],
                     note="informational: same app, granian instead of uvicorn"))  # fmt: skip
    gateway.stop()


def case_ingest(b: Bench) -> None:
    plan = b.plan
    gateway = b.gateway(buffer_bytes=64 * MIB)
    conns = plan.ingest_connections
    per_conn_big = max(20, plan.ingest_budget_bytes // (64 * KIB) // conns)
    big = in_process(_ingest_worker, gateway.port, b.keys.hmac_hex, 64 * KIB, per_conn_big,
                     conns, plan.ingest_seconds, timeout=600)  # fmt: skip
    b.report.details["ingest_64k"] = big
    mb_s = big["bytes_per_s"] / MB
    b.report.add(Row("ingest POST /push, 64 KiB packets", "MB/s", mb_s, "MB/s", ">= 300 MB/s",
                     _verdict(mb_s >= 300 and big["errors"] == 0), errors=big["errors"],
                     note=f"{big['packets_per_s']:,.0f} packets/s, {conns} connections, "
                     f"verified+decrypted"))  # fmt: skip
    per_conn_small = max(200, int(30_000 * plan.ingest_seconds * 1.2) // conns)
    small = in_process(_ingest_worker, gateway.port, b.keys.hmac_hex, KIB, per_conn_small,
                       conns, plan.ingest_seconds, timeout=600)  # fmt: skip
    b.report.details["ingest_1k"] = small
    pps = small["packets_per_s"]
    b.report.add(Row("ingest POST /push, 1 KiB packets", "packets/s", pps, "packets/s",
                     ">= 15,000 packets/s", _verdict(pps >= 15_000 and small["errors"] == 0),
                     errors=small["errors"],
                     note=f"{small['bytes_per_s'] / MB:.1f} MB/s"))  # fmt: skip
    gateway.stop()


def case_e2e(b: Bench) -> None:
    plan = b.plan
    gateway = b.gateway(buffer_bytes=256 * MIB)
    urls = []
    for n in range(plan.e2e_appliances):
        port = _free_port()
        appliance = b.start(f"appliance{n}", [*_bin("qrng-dd"), "appliance", "--port",
                                              str(port)], _clean_env(), port)  # fmt: skip
        appliance.wait_http("/api/2.0/systeminfo")
        urls.append(f"http://{HOST}:{port}")
    env = _clean_env()
    env.update(
        QRNG_HMAC_SECRET_KEY=b.keys.hmac_hex,
        QRNG_COLLECTOR_ID="bench-collector",
        QRNG_APPLIANCE_URLS=",".join(urls),
        QRNG_GATEWAY_PUSH_URL=f"http://{HOST}:{gateway.port}/push",
        QRNG_FETCH_SIZE="1048576",
        QRNG_FETCH_INTERVAL_MS="1",
        QRNG_COLLECTOR_BUFFER_SIZE=str(64 * MIB),
        QRNG_LOG_LEVEL="warning",
    )
    collector = b.start("collector", [*_bin("qrng-dd"), "collector"], env, 0)
    warm_deadline = time.monotonic() + 30
    while _metric_sum(scrape(gateway.port), "qrng_bytes_received_total") == 0:
        if collector.proc.poll() is not None or time.monotonic() > warm_deadline:
            raise RuntimeError(f"no bytes reached the gateway: {collector.tail()}")
        time.sleep(0.2)
    time.sleep(2.0)  # warm-up: health start-up, connections, first fetches
    t1, b1 = time.perf_counter(), _metric_sum(scrape(gateway.port), "qrng_bytes_received_total")
    time.sleep(plan.e2e_seconds)
    t2, b2 = time.perf_counter(), _metric_sum(scrape(gateway.port), "qrng_bytes_received_total")
    mb_s = (b2 - b1) / (t2 - t1) / MB
    b.report.details["e2e"] = {"bytes": b2 - b1, "seconds": t2 - t1, "appliances": len(urls)}
    b.report.add(Row("end to end: simulator -> collector -> gateway (HTTP)", "MB/s", mb_s, "MB/s",
                     ">= 60 MB/s", _verdict(mb_s >= 60), note=f"{len(urls)} appliance(s), "
                     f"fetch 1 MiB every 1 ms, xor, encrypted"))  # fmt: skip
    collector.stop()
    gateway.stop()


def case_udp(b: Bench) -> None:
    plan = b.plan
    udp_port = _free_port(socket.SOCK_DGRAM)
    gateway = b.gateway(buffer_bytes=256 * MIB, udp_port=udp_port)
    best: float | None = None
    for rate in plan.udp_rates_mb_s:
        source = f"udp-{int(rate)}-{time.monotonic_ns() % 10**9}"
        before = scrape(gateway.port)
        sent = in_process(_udp_worker, udp_port, b.keys.hmac_hex, source, rate, plan.udp_seconds,
                          timeout=600)  # fmt: skip
        # The kernel buffer may still hold datagrams: wait until the count stops moving.
        accepted, last_change, previous = 0.0, time.perf_counter(), -1.0
        while time.perf_counter() - last_change < 0.3:
            after = scrape(gateway.port)
            accepted = _metric_sum(after, "qrng_packets_accepted_total", f'"{source}"')
            if accepted != previous:
                previous, last_change = accepted, time.perf_counter()
            time.sleep(0.05)
        gaps = _metric_sum(after, "qrng_sequence_gaps_total", f'"{source}"')
        rejected = _metric_sum(after, "qrng_packets_rejected_total") - _metric_sum(
            before, "qrng_packets_rejected_total"
        )
        loss = 100.0 * (sent["sent"] - accepted) / sent["sent"]
        gap_loss = 100.0 * gaps / sent["sent"]
        delivered = accepted * UDP_PAYLOAD / sent["seconds"] / MB
        b.report.details[f"udp_{rate}"] = {**sent, "accepted": accepted, "gaps": gaps,
                                           "rejected": rejected, "loss_pct": loss,
                                           "gap_loss_pct": gap_loss}  # fmt: skip
        if loss < 0.1:
            best = max(best or 0.0, delivered)
        b.report.add(Row(f"UDP ingest offered {rate:g} MB/s", "delivered", delivered, "MB/s",
                         note=f"offered {sent['offered_mb_s']:.1f} MB/s, loss {loss:.3f}% "
                         f"(gaps {gap_loss:.3f}%), rejected {rejected:g}"))  # fmt: skip
    b.report.add(Row("UDP ingest, best rate with < 0.1% loss", "MB/s", best, "MB/s",
                     ">= 60 MB/s, < 0.1% loss", _verdict(best is not None and best >= 60),
                     note="1200-byte payloads, paced Python sender"))  # fmt: skip
    gateway.stop()


def case_cpu(b: Bench) -> None:
    """In-process: the collector's per-byte cost of health tests and mixing, and the batch
    tests' false alarms over 1 GiB of healthy bytes (64 MiB with --quick)."""
    from qrng_dd.collector.batchtests import BatchTester
    from qrng_dd.collector.health import HealthMonitor
    from qrng_dd.collector.mixing import mix

    seconds = b.plan.cpu_seconds
    batches = [os.urandom(MIB) for _ in range(4)]

    def rate(fn: Callable[[bytes], int], size: int, blocks: Sequence[bytes]) -> float:
        done, n = 0, 0
        t0 = time.perf_counter()
        while True:
            done += fn(blocks[n % len(blocks)])
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and n >= 2:
                return done / elapsed / MB

    monitor = HealthMonitor(7.0)

    def health(batch: bytes) -> int:
        monitor.check(batch, time.monotonic())
        return len(batch)

    tester = BatchTester(40)

    def batch_tests(batch: bytes) -> int:
        tester.check(batch)  # the four batches recur: only the cost counts here
        return len(batch)

    small = [batch[: 64 * KIB] for batch in batches]
    figures = {
        "health (RCT+APT), 1 MiB batches": rate(health, MIB, batches),
        "batch tests, 1 MiB batches": rate(batch_tests, MIB, batches),
        "mix xor, 2 sources x 1 MiB": rate(
            lambda batch: len(mix([batch, batches[0]], "xor")), MIB, batches
        ),
        "mix hkdf, 2 sources x 64 KiB": rate(
            lambda batch: len(mix([batch, small[0]], "hkdf")), 64 * KIB, small
        ),
    }
    for name, value in figures.items():
        b.report.add(Row(f"collector cpu: {name}", "MB/s", value, "MB/s",
                         note=f"{1000 / value:.2f} ns/byte, output bytes"))  # fmt: skip
    b.report.details["cpu"] = figures
    # P5's other half: a healthy source is never quarantined. Fresh bytes, 4 KiB batches
    # (the default fetch size) through both kinds of test at the default alpha.
    total = (64 if b.plan.quick else 1024) * MIB
    monitor, tester = HealthMonitor(7.0), BatchTester(40)
    alarms = 0
    for _ in range(total // MIB):
        chunk = os.urandom(MIB)
        for start in range(0, MIB, 4 * KIB):
            batch = chunk[start : start + 4 * KIB]
            healthy = monitor.check(batch, 0.0).failed_test is None
            alarms += not healthy or tester.check(batch) is not None
            if not healthy:
                monitor.reset()
    b.report.add(Row("collector: false alarms on healthy bytes", f"{total // MIB} MiB",
                     alarms, "alarms", target="0", verdict="PASS" if alarms == 0 else "MISS",
                     note="RCT+APT and batch tests at 2^-40, 4 KiB batches"))  # fmt: skip
    b.report.details["false_alarms"] = {"bytes": total, "alarms": alarms}


def _tree_rss(pid: int) -> int:
    """Memory of the gateway: the granian supervisor plus its worker (which holds the pool).

    Summed as PSS (each shared page counted once across the processes), so pages the worker
    shares with its supervisor are not counted twice.
    """
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_full_info().pss for p in [root, *root.children(recursive=True)])


def case_rss(b: Bench) -> None:
    gateway = b.gateway(buffer_bytes=10 * MIB)
    empty = _tree_rss(gateway.pid)
    b.fill(gateway, 20 * MIB)  # twice the pool, under "replace": full and evicting
    status = b.status(gateway)
    time.sleep(0.5)
    rss = _tree_rss(gateway.pid)
    b.report.details["rss"] = {"empty": empty, "full": rss, "fill": status["buffer_fill_percent"]}
    b.report.add(Row("gateway memory (PSS, supervisor + worker), 10 MiB pool full", "PSS",
                     rss / MB, "MB", "<= 100 MB",
                     _verdict(rss / MB <= 100), note=f"empty pool: {empty / MB:.1f} MB; "
                     f"fill {status['buffer_fill_percent']:.0f}%"))  # fmt: skip
    gateway.stop()


# -- command -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``qrng-dd bench`` options."""
    parser.add_argument("--quick", action="store_true", help="short runs (CI-like smoke test)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("bench-results.json"),
        metavar="FILE",
        help="JSON result file (default bench-results.json)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        metavar="LIST",
        help=f"comma-separated subset of: {', '.join(CASES)} (default: all)",
    )
    parser.add_argument("--seconds", type=int, default=None, help="override wrk duration")


def run(args: argparse.Namespace) -> int:
    """Run the selected cases; print the table; write the JSON. 0 unless a case crashed."""
    cases = {c.strip() for c in str(args.cases).split(",") if c.strip()}
    unknown = cases - set(CASES)
    if unknown:
        print(f"qrng-dd bench: unknown case(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    plan = Plan.make(bool(args.quick))
    if args.seconds:
        plan.wrk_seconds = int(args.seconds)
    report = Report(plan, machine_info())
    report.details["_cases"] = sorted(cases)
    print(f"qrng-dd bench: {', '.join(c for c in CASES if c in cases)}"
          f"{' (quick)' if plan.quick else ''}; load {report.machine['load_before']}",
          flush=True)  # fmt: skip
    steps: list[tuple[str, Callable[[Bench], None]]] = []
    if "ceiling" in cases:
        steps.append(("ceiling", case_ceiling))
    if cases & {"small", "latency", "bulk"}:
        steps.append(("small/latency/bulk", lambda b: case_small_and_latency(b, cases)))
    named: dict[str, Callable[[Bench], None]] = {
        "accesslog": case_accesslog,
        "granian": case_granian_gateway,
        "ingest": case_ingest,
        "e2e": case_e2e,
        "udp": case_udp,
        "cpu": case_cpu,
        "rss": case_rss,
    }
    steps += [(name, fn) for name, fn in named.items() if name in cases]
    for name, fn in steps:
        print(f"[{name}]", flush=True)
        with contextlib.ExitStack() as stack:
            try:
                fn(Bench(plan, report, stack))
            except Exception as err:  # one broken case must not lose the others
                report.failures.append(f"{name}: {type(err).__name__}: {err}")
                print(f"  FAILED: {type(err).__name__}: {err}", flush=True)
    report.machine["load_after"] = list(os.getloadavg())
    print()
    print(format_table(report))
    if report.failures:
        print("failed cases:", *report.failures, sep="\n  ")
    write_results(report, args.output)
    print(f"results written to {args.output}")
    return 1 if report.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qrng-dd bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    from qrng_dd.bench import main as _main

    sys.exit(_main())
