"""Listening sockets, bound by us rather than by the ASGI server.

Binding first lets an embedder learn an ephemeral port, and a busy port raises ``OSError`` in
the caller's code (uvicorn would log and call ``sys.exit``, wrong for an embedded server).
"""

from __future__ import annotations

import socket


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening, inheritable TCP socket on ``host:port`` (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only when it does, and
    # without it every response (headers, then body) stalls ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
