"""Running the gateway: uvicorn on one event loop, the UDP receiver beside it.

One process, one loop: the pool lives in this process's memory and nowhere else (P6), and
every route, the UDP receiver and the MCP mount share it without locks. The gateway opens
listening sockets only; nothing in it connects anywhere (P1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp

from qrng_dd import logs
from qrng_dd.config import GatewaySettings, load
from qrng_dd.gateway.front import Front
from qrng_dd.gateway.service import EntropyService
from qrng_dd.gateway.state import StateDir
from qrng_dd.gateway.udp import open_socket, start_udp
from qrng_dd.net import bind

log = structlog.get_logger("qrng_dd.gateway")


def build_app(service: EntropyService) -> Front:
    """The ASGI app with its lifespan (UDP receiver) and, if enabled, the MCP mount."""
    settings = service.settings
    mounts: dict[str, ASGIApp] = {}
    mcp_lifespan = None
    if settings.mcp_enabled:
        from qrng_dd.mcp.http import MCP_PATH, mount_in_gateway

        mounts[MCP_PATH], mcp_lifespan = mount_in_gateway(service)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            address = settings.udp_address
            if address is not None:
                stack.callback(start_udp(service, open_socket(*address)).close)
            if mcp_lifespan is not None:
                await stack.enter_async_context(mcp_lifespan())
            log.info(
                "gateway_started",
                gateway_id=settings.gateway_id,
                buffer_bytes=settings.buffer_size,
                policy=settings.buffer_overflow_policy,
                api_keys=len(settings.api_keys),
                udp=settings.udp_listen,
                mcp=settings.mcp_enabled,
                state_dir=str(settings.state_dir) if settings.state_dir else None,
                remembers_previous_run=service.verifier.remembers,
            )
            if not service.verifier.remembers:
                log.warning(
                    "quiet_start",
                    message="no sequence memory of an earlier run (QRNG_STATE_DIR unset or new): "
                    "packets created before this start plus QRNG_MAX_CLOCK_SKEW_S are refused "
                    "as stale, so no replay of what an earlier instance served can be accepted",
                    quiet_s=round(max(0.0, service.verifier.quiet_until - service.clock()), 1),
                )
            yield
            log.info("gateway_stopping", bytes_pooled=service.pool.available)
            await service.close()

    return Front(service, mounts=mounts, lifespan=lifespan)


def uvicorn_config(app: Front, settings: GatewaySettings) -> uvicorn.Config:
    """uvicorn settings: TLS 1.2+ when configured, client certificates when a CA is given."""
    options: dict[str, Any] = {}
    if settings.tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        options["ssl_keyfile"] = str(settings.tls_key_file)
        if settings.tls_client_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.tls_client_ca_file)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **options,
    )


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its embedder (the demo handles Ctrl-C)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """A gateway inside an existing event loop (the demo, the tests), on uvicorn.

    Signals are its embedder's business: the demo stops it on Ctrl-C with :meth:`stop`. The
    ``qrng-dd gateway`` service itself runs on granian (:func:`run_gateway`).
    """

    def __init__(self, settings: GatewaySettings, service: EntropyService | None = None) -> None:
        self.settings = settings
        self.service = service or EntropyService(settings)
        self.app = build_app(self.service)
        self.config = uvicorn_config(self.app, settings)
        _patch_tls(self.config)
        self.server = _QuietServer(self.config)
        self.socket = bind(settings.host, settings.port)
        self.port: int = self.socket.getsockname()[1]

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.socket])

    @property
    def started(self) -> bool:
        return self.server.started

    def stop(self) -> None:
        self.server.should_exit = True


def _patch_tls(config: uvicorn.Config) -> None:
    """Prefer TLS 1.3 and refuse anything below 1.2."""
    if config.is_ssl:
        config.load()
        assert config.ssl is not None
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML file (section gateway:); env wins"
    )


def run(args: argparse.Namespace) -> int:
    """``qrng-dd gateway``."""
    return run_gateway(args.config)


#: How the granian worker learns the ``--config`` file the supervisor was given.
_CONFIG_ENV = "QRNG_DD_GATEWAY_CONFIG_FILE"


def app_from_environment() -> Any:
    """ASGI factory for granian's worker: settings from the environment (and ``--config``)."""
    config = os.environ.get(_CONFIG_ENV)
    settings = load(GatewaySettings, config_file=Path(config) if config else None)
    logs.configure(settings.log_format, settings.log_level)
    return build_app(EntropyService(settings))


def _raise_open_files(wanted: int) -> None:
    """Raise the soft open-files limit towards ``wanted`` (never past the hard limit): a
    soft limit of 1024, common by default, would refuse connections long before
    ``QRNG_MAX_CONNECTIONS``. The worker inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_gateway(config_file: Path | None) -> int:
    """``qrng-dd gateway`` on granian, one worker (the pool lives in one process).

    granian serves the same app 2.5 times faster than uvicorn on this kind of machine
    (``make bench``, what-if row), so the service runs on it; the demo and the tests embed
    the same app in uvicorn (:class:`GatewayServer`), which shares an event loop.
    Settings are validated here first, so a bad value is one line before any worker starts.

    Raises:
        ConfigError: printed as one line by the CLI.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
    from granian.http import HTTP1Settings

    settings = load(GatewaySettings, config_file=config_file)
    logs.configure(settings.log_format, settings.log_level)
    if settings.state_dir is not None:
        # Checked here so a bad one is one line before any worker starts; the worker then
        # opens and locks it for good.
        state = StateDir(settings.state_dir, settings.gateway_id)
        try:
            state.load()
        finally:
            state.close()
    try:
        bind(settings.host, settings.port).close()
    except OSError as err:
        msg = f"qrng-dd gateway: cannot listen on {settings.host}:{settings.port}: {err}"
        print(msg, file=sys.stderr)
        return 1
    if config_file is not None:
        os.environ[_CONFIG_ENV] = str(config_file.resolve())
    _raise_open_files(settings.max_connections + 256)
    tls: dict[str, Any] = {}
    if settings.tls_cert_file is not None:
        tls = {
            "ssl_cert": settings.tls_cert_file,
            "ssl_key": settings.tls_key_file,
            "ssl_protocol_min": SSLProtocols.tls12,  # 1.3 preferred, 1.2 accepted, none older
        }
        if settings.tls_client_ca_file is not None:
            tls |= {"ssl_ca": settings.tls_client_ca_file, "ssl_client_verify": True}
    Granian(
        "qrng_dd.gateway.server:app_from_environment",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        workers=1,
        loop=Loops.uvloop,
        backlog=2048,
        backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout_s * 1000)),
        log_enabled=True,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
        log_access=False,
        workers_kill_timeout=10,
        **tls,
    ).serve()
    return 0
