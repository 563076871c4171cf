"""The MCP server: quantum entropy as tools a language model can call (DESIGN §7).

Theory of operation
-------------------

Seven tools (``get_random_bytes``, ``get_random_hex``, ``get_random_base64``,
``get_random_integers``, ``get_random_floats``, ``get_random_uuid``, ``get_status``) are
registered on the official SDK's :class:`~mcp.server.mcpserver.MCPServer` by
:func:`create_server`. Each one asks a :class:`Backend` and nothing else; the backend is the
only thing that knows where entropy lives:

- :class:`HttpBackend` is a client of a gateway's REST API (DESIGN §5) over one pooled
  ``httpx.AsyncClient``. This is ``qrng-dd mcp``: a separate process that holds only an API
  key, never the HMAC key, so it can run next to the model on the external network.
- :class:`ServiceBackend` calls the gateway's in-process
  :class:`~qrng_dd.gateway.service.EntropyService`. This is the gateway's own ``/mcp``
  (:func:`mount_in_gateway`): no extra hop, same pool, same accounting (P3).

Rules every tool keeps:

1. **Limits are in the schema.** Every argument's minimum, maximum, enum and default is in the
   tool's JSON input schema, so a model sees them before it calls. The SDK validates the
   arguments against that schema before the tool body runs, and the one rule a schema cannot
   state (``min <= max``) is checked first thing in the body, so a bad call never reaches the
   backend and never drains the pool.
2. **Honest failure (P4).** Short of entropy, rate limited, unreachable, bad key: each becomes
   a tool error (``isError: true``) whose text says why and what to do. Nothing is ever padded,
   retried with pseudo-random bytes, or made up. When the gateway is short of entropy the tool
   also reads the gateway's status, and if a source is quarantined (P5) the message says so.
3. **Trust nothing that came over the wire.** :class:`HttpBackend` checks every answer's shape
   (length, range, UUID version) and refuses a malformed one rather than pass it on.
4. **Structured results.** Each tool declares an output schema (a pydantic model) and returns
   the structured value plus a readable text rendering of it.

Transports: stdio (the default; stdout carries the protocol, so every log line goes to
stderr) or streamable HTTP at exactly ``/mcp``. Over HTTP the endpoint checks ``Origin`` as the
MCP specification asks (a browser page on another site must not reach a local server: DNS
rebinding) and, when ``QRNG_MCP_AUTH_TOKEN`` is set, a bearer token. The gateway's mount asks
for one of the gateway's API keys instead, like every other entropy route. Tokens are compared
in constant time and never logged (P6).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio

from qrng_dd.mcp.backends import HttpBackend
from qrng_dd.mcp.http import _LOCAL_HOSTS, MCP_PATH, create_http_app
from qrng_dd.mcp.tools import create_server

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


DEFAULT_HTTP_PORT: Final = 8080

# -- standalone -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``qrng-dd mcp`` options."""
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default; for desktop apps) or streamable HTTP at /mcp",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="HTTP address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"HTTP port (default {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML file (section mcp:); the environment wins"
    )


def run(args: argparse.Namespace) -> int:
    """``qrng-dd mcp``: serve the tools over stdio or streamable HTTP.

    Raises:
        ConfigError: invalid settings (printed as one line by the CLI).
    """
    from qrng_dd import logs
    from qrng_dd.config import McpSettings, load

    settings = load(McpSettings, config_file=args.config)
    # stdout is the stdio transport: every log line goes to stderr.
    logs.configure(settings.log_format, settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    key = settings.gateway_api_key.get_secret_value()
    if args.transport == "stdio":
        anyio.run(_serve_stdio, settings.gateway_url, key)
        return 0
    token = settings.mcp_auth_token.get_secret_value() if settings.mcp_auth_token else None
    if token is None and args.host not in _LOCAL_HOSTS:
        log.warning("mcp_http_without_token host=%s (set QRNG_MCP_AUTH_TOKEN)", args.host)
    anyio.run(
        _serve_http, settings.gateway_url, key, token, settings.mcp_allowed_origins, args.host,
        args.port,
    )  # fmt: skip
    return 0


async def _serve_stdio(gateway_url: str, api_key: str) -> None:
    async with HttpBackend(gateway_url, api_key) as backend:
        log.info("mcp_started transport=stdio gateway=%s", gateway_url)
        await create_server(backend).run_stdio_async()


async def _serve_http(
    gateway_url: str,
    api_key: str,
    token: str | None,
    origins: list[str],
    host: str,
    port: int,
) -> None:
    import uvicorn

    async with HttpBackend(gateway_url, api_key) as backend:
        app = create_http_app(create_server(backend), auth_token=token, allowed_origins=origins)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        log.info("mcp_started transport=http url=http://%s:%s%s gateway=%s", host, port,
                 MCP_PATH, gateway_url)  # fmt: skip
        await uvicorn.Server(config).serve()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qrng_dd.mcp.server``: the same as ``qrng-dd mcp``."""
    from qrng_dd.errors import ConfigError

    parser = argparse.ArgumentParser(prog="qrng-dd mcp", description="serve the MCP tools")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as err:
        print(f"qrng-dd mcp: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
