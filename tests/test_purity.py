"""Pure logic imports no I/O framework (STYLE §1): it can be tested byte for byte."""

from __future__ import annotations

import subprocess
import sys

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
