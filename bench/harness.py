"""Starting what is measured, and driving wrk and the open-loop generator against it.

Processes are started, awaited and stopped by the tests' harness (`tests.support.gateway`,
`tests.support.diode`): the gateway by `start_gateway`, the simulator by `start_appliance`, the
collector by `start_collector`, the bare ASGI servers by `run_process` and `wait_ready`. Each is
entered on the case's `contextlib.ExitStack`, so whatever a case started is stopped when it ends,
even when it fails; `stop` ends one earlier, to free its core for the next measurement.

The granian and uvicorn command lines load their app by name (`bench.apps`), so they get the
repository root on ``PYTHONPATH``: the benchmark is not installed, it runs from the checkout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from tests.support.diode import Running, run_process
from tests.support.gateway import (
    RunningGateway,
    clean_environ,
    free_port,
    start_gateway,
    wait_ready,
)

from bench.loadgen import open_loop_worker
from bench.plan import HOST, LATENCY_RATE, Plan
from bench.report import Report
from bench.workers import fill_worker, in_process

__all__ = ["ROOT", "Bench", "parse_wrk", "server_command"]

#: The checkout the benchmark runs from; on ``PYTHONPATH`` for the servers it starts.
ROOT: Final = Path(__file__).resolve().parent.parent


def _bin(name: str) -> list[str]:
    """A console script of this venv, else the module through this interpreter."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return [str(path)]
    return [sys.executable, "-m", name]


def _pythonpath() -> str:
    """``PYTHONPATH`` with the checkout first, so ``bench.apps`` imports in a server process."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def server_command(server: str, port: int, app: str, *, factory: bool = False) -> list[str]:
    """The granian or uvicorn command line that serves ``app`` (``module:name``) on ``port``."""
    if server == "granian":
        return [*_bin("granian"), "--interface", "asgi", "--workers", "1", "--host", HOST,
                "--port", str(port), "--no-ws", "--log-level", "warning",
                *(["--factory"] if factory else []), app]  # fmt: skip
    return [*_bin("uvicorn"), app, "--host", HOST, "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
            *(["--factory"] if factory else []), "--lifespan", "on"]  # fmt: skip


class Bench:
    """Starts services for one case, runs load against them, collects rows."""

    def __init__(self, plan: Plan, report: Report, stack: contextlib.ExitStack) -> None:
        self.plan = plan
        self.report = report
        self.stack = stack
        self.wrk = shutil.which("wrk")

    # -- starting things ----------------------------------------------------------------------

    def gateway(
        self,
        *,
        buffer_bytes: int,
        access_log: bool = False,
        log_level: str = "warning",
        udp_port: int | None = None,
        server: str = "qrng-dd",
    ) -> RunningGateway:
        """``qrng-dd gateway`` (or, with ``server="granian"``, the granian command line)."""
        port = free_port()
        env = {
            "QRNG_PORT": str(port),
            "QRNG_RATE_LIMIT": "1000000",
            "QRNG_BUFFER_SIZE": str(buffer_bytes),
            "QRNG_BUFFER_OVERFLOW_POLICY": "replace",
            "QRNG_ACCESS_LOG": "true" if access_log else "false",
            "QRNG_LOG_LEVEL": log_level,
            "QRNG_LOG_FORMAT": "json",
        }
        if udp_port is not None:
            env["QRNG_UDP_LISTEN"] = f"{HOST}:{udp_port}"
        command = None
        if server == "granian":
            env["PYTHONPATH"] = _pythonpath()
            command = server_command("granian", port, "bench.apps:gateway_app", factory=True)
        return self.stack.enter_context(start_gateway(env, command=command))

    def bare(self, server: str) -> Running:
        """The bare ASGI app (`bench.apps.bare_app`) on granian or uvicorn, answering."""
        port = free_port()
        argv = server_command(server, port, "bench.apps:bare_app")
        self.report.commands.append(" ".join(argv))
        running = self.stack.enter_context(
            run_process(argv, clean_environ({"PYTHONPATH": _pythonpath()}))
        )
        running.url = f"http://{HOST}:{port}"
        wait_ready(running.url, running.proc)
        return running

    def fill(self, gateway: RunningGateway, nbytes: int | None = None) -> int:
        """Top the gateway's pool up to capacity (or push ``nbytes``); return bytes pushed."""
        if nbytes is None:
            status = gateway.status()
            nbytes = int(status["buffer_capacity_bytes"]) - int(status["buffer_bytes_available"])
        if nbytes <= 0:
            return 0
        result = in_process(fill_worker, gateway.port, gateway.hmac_hex, nbytes, timeout=600)
        if result["errors"]:
            raise RuntimeError(f"pool fill refused: {result['status']}")
        return nbytes

    # -- load ---------------------------------------------------------------------------------

    def run_wrk(
        self,
        url: str,
        seconds: int,
        *,
        api_key: str | None = None,
        between: Callable[[], object] | None = None,
    ) -> dict[str, Any]:
        """Saturated closed-loop run: a short untimed warm-up, ``between()``, the timed run."""
        if self.wrk is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        base = [self.wrk, f"-t{self.plan.threads}", f"-c{self.plan.connections}"]
        if api_key is not None:
            base += ["-H", f"Authorization: Bearer {api_key}"]
        if self.plan.warmup_seconds:
            _wrk_once([*base, f"-d{self.plan.warmup_seconds}s", url], self.plan.warmup_seconds)
        if between is not None:
            between()
        argv = [*base, f"-d{seconds}s", url]
        printable = " ".join(argv)
        if api_key is not None:
            printable = printable.replace(api_key, "$API_KEY")
        if printable not in self.report.commands:
            self.report.commands.append(printable)
        return _wrk_once(argv, seconds)

    def open_loop(self, url: str, path: str, *, api_key: str | None = None) -> dict[str, Any]:
        """Latency at `LATENCY_RATE` requests per second to ``url`` + ``path``, from a separate
        process."""
        plan = self.plan
        port = urlsplit(url).port
        if port is None:
            raise ValueError(f"{url} names no port")
        header = f"Authorization: Bearer {api_key}\r\n" if api_key is not None else ""
        result: dict[str, Any] = in_process(
            open_loop_worker, port, path, header, LATENCY_RATE, plan.latency_seconds, 1.0,
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
