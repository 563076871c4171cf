"""``qrng-dd demo``: the whole diode in one process on 127.0.0.1.

The simulator (on an ephemeral port), the collector and the gateway (port 7764 unless told
otherwise, with MCP at ``/mcp``) run on one event loop, with a fresh HMAC key and API key that
live only in this process's memory. Once the pool holds entropy, it prints curl lines that
work as pasted. Ctrl-C stops the collector first (final flush), then the gateway, then the
simulator.

The API key is printed because this is a local demo and the curl lines need it; it goes in
an ``Authorization`` header, never in a URL (URLs end up in shell history and proxy logs).
The HMAC key is never printed.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
from collections.abc import Mapping

import anyio

from qrng_dd import logs
from qrng_dd.collector.service import Collector
from qrng_dd.config import CollectorSettings, GatewaySettings, load
from qrng_dd.gateway.server import GatewayServer
from qrng_dd.simulator import ApplianceAddress, Faults, serve_appliance

#: Bytes in the pool before the curl lines are printed: enough for every example.
READY_BYTES = 65_536


def _common(hmac_key: str) -> Mapping[str, str]:
    return {
        "QRNG_HMAC_SECRET_KEY": hmac_key,
        "QRNG_LOG_FORMAT": "console",
        "QRNG_LOG_LEVEL": "warning",
    }


def _gateway_settings(hmac_key: str, api_key: str, port: int, mcp: bool) -> GatewaySettings:
    return load(
        GatewaySettings,
        {
            **_common(hmac_key),
            "QRNG_API_KEYS": api_key,
            "QRNG_HOST": "127.0.0.1",
            "QRNG_PORT": str(port),
            "QRNG_MCP_ENABLED": "true" if mcp else "false",
            "QRNG_ACCESS_LOG": "false",
            # Collector and gateway share this process's clock: no skew to allow, so the
            # gateway has no quiet start (see QRNG_STATE_DIR in the README).
            "QRNG_MAX_CLOCK_SKEW_S": "0",
        },
    )


def _collector_settings(hmac_key: str, appliance_url: str, port: int) -> CollectorSettings:
    return load(
        CollectorSettings,
        {
            **_common(hmac_key),
            "QRNG_APPLIANCE_URLS": appliance_url,
            "QRNG_GATEWAY_PUSH_URL": f"http://127.0.0.1:{port}/push",
            "QRNG_FETCH_SIZE": "65536",
            "QRNG_TELEMETRY_INTERVAL_S": "2",
        },
    )


def _mcp_available() -> bool:
    try:
        import qrng_dd.mcp.server  # noqa: F401
    except ImportError:
        return False
    return True


def _banner(base: str, api_key: str, mcp: bool) -> str:
    auth = f"Authorization: Bearer {api_key}"
    lines = [
        "",
        "qrng-dd demo is running: simulator -> collector -> gateway, all on 127.0.0.1.",
        "The simulator's bytes come from the OS CSPRNG: this demo is NOT quantum.",
        "",
        "Try:",
        f"  curl -s -H '{auth}' '{base}/api/random?bytes=32'",
        f"  curl -s -H '{auth}' '{base}/api/integers?count=5&min=1&max=6'",
        f"  curl -s -H '{auth}' '{base}/api/uuid'",
        f"  curl -s -H '{auth}' '{base}/api/floats?count=3'",
        f"  curl -s -H '{auth}' '{base}/api/status'",
        f"  curl -s '{base}/health'",
        f"  curl -s '{base}/metrics' | grep ^qrng_buffer",
        f"  API docs: {base}/docs",
    ]
    if mcp:
        lines.append(f"  MCP (streamable HTTP): {base}/mcp  (Bearer {api_key})")
    lines += ["", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


async def _demo(port: int) -> None:
    hmac_key = secrets.token_hex(32)
    api_key = secrets.token_urlsafe(24)
    mcp = _mcp_available()
    # Bind the gateway's port first: a port in use is a plain OSError, before anything runs.
    gateway = GatewayServer(_gateway_settings(hmac_key, api_key, port, mcp))
    address = ApplianceAddress(url="", port=0, cert_path=None)
    appliance_ready = anyio.Event()
    gateway_done = anyio.Event()

    async def run_gateway() -> None:
        try:
            await gateway.serve()
        finally:
            gateway_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: serve_appliance(
                "127.0.0.1", 0, tls=False, faults=Faults(), ready=appliance_ready,
                address=address,
            )
        )  # fmt: skip
        await appliance_ready.wait()
        tg.start_soon(run_gateway)
        collector = Collector(_collector_settings(hmac_key, address.url, gateway.port))
        stop = anyio.Event()
        collector_done = anyio.Event()

        async def run_collector() -> None:
            try:
                async with collector:
                    await collector.run(stop)
            finally:
                collector_done.set()

        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            tg.start_soon(run_collector)
            with anyio.move_on_after(60):
                while gateway.service.pool.available < READY_BYTES:  # noqa: ASYNC110 - a demo's wait
                    await anyio.sleep(0.05)
            print(_banner(f"http://127.0.0.1:{gateway.port}", api_key, mcp), flush=True)
            async for _ in signals:
                break
        print("stopping: collector flush, gateway, simulator ...", file=sys.stderr)
        stop.set()
        await collector_done.wait()
        gateway.stop()
        await gateway_done.wait()
        tg.cancel_scope.cancel()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=7764, help="gateway port (default 7764)")


def run(args: argparse.Namespace) -> int:
    """``qrng-dd demo``."""
    return run_demo(args.port)


def run_demo(port: int = 7764) -> int:
    """``qrng-dd demo``."""
    logs.configure("console", "warning")
    try:
        anyio.run(_demo, port, backend_options={"use_uvloop": True})
    except OSError as err:
        print(f"qrng-dd demo: {err} (is port {port} in use? try --port)", file=sys.stderr)
        return 1
    return 0
