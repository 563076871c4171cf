"""Helpers for suites that run the simulator and the collector as real processes.

Complements :mod:`tests.gateway_support` (the gateway process). Processes write to temporary
files, never pipes, so none can block on a full pipe; readiness and progress are polled with
a deadline, never slept for.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import httpx

from tests.support.gateway import clean_environ, free_port, stop

T = TypeVar("T")
POLL_S = 0.05


def eventually(probe: Callable[[], T | None], deadline_s: float = 20.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = f"not reached within {deadline_s} s: {what or probe}"
            raise AssertionError(msg)
        time.sleep(POLL_S)  # polling interval, bounded by the deadline


def cli(*args: str) -> list[str]:
    """A ``qrng-dd`` command line for this interpreter."""
    return [sys.executable, "-m", "qrng_dd.cli", *args]


@dataclass
class Running:
    """A process and its captured output files."""

    proc: subprocess.Popen[bytes]
    stdout_file: IO[bytes]
    stderr_file: IO[bytes]
    url: str = ""

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def stdout(self) -> str:
        self.stdout_file.seek(0)
        return self.stdout_file.read().decode(errors="replace")

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines with this ``event``."""
        found = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    found.append(record)
        return found


@contextlib.contextmanager
def run_process(argv: list[str], env: Mapping[str, str]) -> Iterator[Running]:
    """Run ``argv`` with ``env``; SIGTERM it on exit (SIGKILL after a deadline)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        subprocess.Popen(argv, env=dict(env), stdout=out, stderr=err) as proc,
    ):
        try:
            yield Running(proc, out, err)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stop(proc)


@contextlib.contextmanager
def start_appliance(*flags: str) -> Iterator[Running]:
    """``qrng-dd appliance`` on a free port, ready to serve."""
    port = free_port()
    argv = cli("appliance", "--host", "127.0.0.1", "--port", str(port), *flags)
    with run_process(argv, clean_environ({})) as running:
        running.url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if running.proc.poll() is not None:
                raise AssertionError(f"appliance exited: {running.stderr()}")
            try:
                return httpx.get(f"{running.url}/api/2.0/systeminfo", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(ready, what="appliance ready")
        yield running


def set_faults(appliance: Running, **faults: object) -> None:
    """Change the simulator's faults through its control endpoint."""
    response = httpx.post(f"{appliance.url}/sim/faults", json=faults, timeout=5)
    assert response.status_code == 200, response.text


@contextlib.contextmanager
def start_collector(env: Mapping[str, str]) -> Iterator[Running]:
    """``qrng-dd collector`` with ``env`` (JSON logs on stderr)."""
    with run_process(cli("collector"), clean_environ({"QRNG_LOG_FORMAT": "json", **env})) as r:
        yield r
