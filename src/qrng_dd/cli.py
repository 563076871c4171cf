"""The ``qrng-dd`` command: arguments → configuration → run. Thin on purpose.

Every subcommand imports its module only when chosen, so ``qrng-dd keygen`` starts fast and
a missing optional dependency affects only the command that needs it. A :class:`ConfigError`
anywhere becomes one line on stderr and exit status 2: an operator sees what to fix, never a
traceback.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from qrng_dd import __version__
from qrng_dd.errors import ConfigError

EXIT_CONFIG = 2


def _keygen(args: argparse.Namespace) -> int:
    # 32 bytes = 256 bits for the HMAC key (DESIGN §3 minimum); API keys carry 192 bits in
    # URL-safe text so they survive query strings unescaped.
    print(secrets.token_urlsafe(24) if args.api_key else secrets.token_hex(32))
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from qrng_dd.gateway.server import run_gateway

    return run_gateway(args.config)


def _collector(args: argparse.Namespace) -> int:
    from qrng_dd.collector.service import run_collector

    return run_collector(args.config)


def _appliance(args: argparse.Namespace) -> int:
    from qrng_dd import appliance

    return appliance.run(args)


def _demo(args: argparse.Namespace) -> int:
    from qrng_dd.demo import run_demo

    return run_demo(port=args.port)


def _test_source(args: argparse.Namespace) -> int:
    from qrng_dd import testsource

    return testsource.run(args)


def _bench(args: argparse.Namespace) -> int:
    from qrng_dd import bench

    return bench.run(args)


def _mcp(args: argparse.Namespace) -> int:
    from qrng_dd import mcp_server

    return mcp_server.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qrng-dd", description="A software data diode for quantum entropy."
    )
    parser.add_argument("--version", action="version", version=f"qrng-dd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    for name, run, text in (
        ("gateway", _gateway, "run the external gateway (push ingest, REST API, metrics)"),
        ("collector", _collector, "run the internal collector (fetch, mix, sign, push)"),
    ):
        command(name, run, text).add_argument(
            "--config", type=Path, metavar="FILE", help="YAML file; the environment wins"
        )
    from qrng_dd import appliance

    appliance.add_arguments(command("appliance", _appliance, "run the Quantis simulator"))
    try:
        from qrng_dd import mcp_server
    except ImportError:  # pragma: no cover - the module ships with the package
        pass
    else:
        mcp_server.add_arguments(command("mcp", _mcp, "serve the MCP tools (stdio or HTTP)"))
    from qrng_dd import testsource

    testsource.add_arguments(
        command("test-source", _test_source, "health tests and a randomness report of a source")
    )
    try:
        from qrng_dd import bench
    except ImportError:  # pragma: no cover
        pass
    else:
        bench.add_arguments(command("bench", _bench, "benchmarks on loopback (make bench)"))
    demo = command("demo", _demo, "simulator, collector and gateway in one process")
    demo.add_argument("--port", type=int, default=7764, help="gateway port (default 7764)")
    keygen = command("keygen", _keygen, "print a fresh HMAC key (or API key)")
    keygen.add_argument("--api-key", action="store_true", help="print an API key instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as err:
        print(f"qrng-dd {args.command}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
