"""The ASGI apps the benchmark has a server load by name (``bench.apps:bare_app``).

granian and uvicorn are started as separate processes with the repository root on their
``PYTHONPATH`` (`bench.harness`), so these names import there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from qrng_dd.gateway.server import app_from_environment

__all__ = ["bare_app", "gateway_app"]

_BARE_BODY: Final = b"0123456789abcdef" * 4
_BARE_HEADERS: Final = [(b"content-type", b"application/octet-stream"), (b"content-length", b"64")]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: ASGI factory: the real gateway app from ``QRNG_*``, the one ``qrng-dd gateway`` serves, for
#: the what-if row that has the granian command line serve it (``--factory``).
gateway_app = app_from_environment


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
