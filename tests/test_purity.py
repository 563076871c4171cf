"""The import contract: pure logic imports no I/O framework (STYLE §1), so it can be tested
byte for byte; the gateway and the collector never import each other (P1: the two sides share
only the wire format); the product never imports the tests or the benchmarks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PURE = [
    "wire.packet",
    "gateway.verifier",
    "gateway.pool",
    "gateway.derive",
    "gateway.randomness",
    "config",
    "collector.health",
    "collector.batchtests",
    "collector.mixing",
    "collector.quarantine",
    "collector.outbox",
    "collector.packets",
    "collector.schedule",
    "wire.telemetry",
    "gateway.api",
    "gateway.problem",
    "gateway.policy",
    "ratelimit",
    "addresses",
    "seeder.options",
    "gateway.compat.randomorg_methods",
    "gateway.compat.anu",
    "gateway.shapes",
    "gateway.shaped",
    "seeder.stats",
]
FORBIDDEN = ["asyncio", "anyio", "httpx", "starlette", "uvicorn", "socket", "mcp"]
# pydantic-settings itself imports asyncio and socket; config still does no I/O of its own.
ALLOWED = {"config": {"asyncio", "socket"}}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_framework(module: str) -> None:
    """Importing the module alone loads none of the I/O stacks."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module('qrng_dd.{module}')\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    loaded = set(filter(None, out.stdout.strip().split(",")))
    assert loaded <= ALLOWED.get(module, set())


SRC = Path(__file__).resolve().parent.parent / "src" / "qrng_dd"
#: package -> what it must never import.
_NEVER = {
    "gateway": ("qrng_dd.collector", "qrng_dd.simulator"),
    "collector": ("qrng_dd.gateway", "qrng_dd.simulator", "qrng_dd.mcp"),
    "wire": ("qrng_dd.gateway", "qrng_dd.collector", "qrng_dd.mcp", "qrng_dd.simulator"),
    "simulator": ("qrng_dd.gateway", "qrng_dd.collector", "qrng_dd.mcp"),
    "": ("tests", "bench"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(_NEVER))
def test_packages_keep_to_their_side(package: str) -> None:
    """Every import statement, also inside functions and under TYPE_CHECKING."""
    banned = _NEVER[package]
    found = {
        f"{path.relative_to(SRC)}: {name}"
        for path in (SRC / package).rglob("*.py")
        for name in _imports(path)
        if any(name == b or name.startswith(f"{b}.") for b in banned)
    }
    assert not found
