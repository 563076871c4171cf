"""The ``qrng-dd`` command: arguments → configuration → run. Thin on purpose.

Each subcommand lives in its own module, named in :data:`COMMANDS`, which is imported only when
that command is chosen (or for ``--help``): ``qrng-dd keygen`` does not load the MCP SDK, and
a gateway does not load the simulator. A module offers ``add_arguments(parser)`` and
``run(args) -> int``. A :class:`ConfigError` anywhere becomes one line on stderr and exit
status 2: an operator sees what to fix, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from qrng_dd import __version__
from qrng_dd.errors import ConfigError

EXIT_CONFIG = 2

#: command → (module providing ``add_arguments`` and ``run``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gateway": ("qrng_dd.gateway.server", "run the external gateway (push ingest, REST API)"),
    "collector": ("qrng_dd.collector.service", "run the internal collector (fetch, mix, push)"),
    "mcp": ("qrng_dd.mcp.server", "serve the MCP tools (stdio or streamable HTTP)"),
    "appliance": ("qrng_dd.simulator.server", "run the Quantis-compatible simulator (not quantum)"),
    "demo": ("qrng_dd.demo", "simulator, collector and gateway in one process"),
    "test-source": ("qrng_dd.testsource", "health tests and a randomness report of a source"),
    "keygen": ("qrng_dd.keygen", "print a fresh HMAC key (or, with --api-key, an API key)"),
    "seed": ("qrng_dd.seeder.command", "feed the kernel's entropy pool from a gateway"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's module is imported for its options."""
    parser = argparse.ArgumentParser(
        prog="qrng-dd", description="A software data diode for quantum entropy."
    )
    parser.add_argument("--version", action="version", version=f"qrng-dd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, text) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(module=module_name)
        if only is None or only == name:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    try:
        code: int = importlib.import_module(args.module).run(args)
    except ConfigError as err:
        print(f"qrng-dd {args.command}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
