"""The gateway's UDP receiver: one packet per datagram, verified exactly like a push.

Nothing is ever sent back: there is no reply to a datagram, valid or not, so the receiver
works across a link that physically carries nothing in the other direction (P1). A refused
datagram is only counted (and, throttled, logged). The socket gets a large receive buffer so
bursts are absorbed by the kernel instead of being lost while the loop is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

import structlog

from qrng_dd.errors import PacketError
from qrng_dd.gateway.service import EntropyService

log = structlog.get_logger("qrng_dd.gateway.udp")

#: 32 MiB: a quarter second of a 1 Gbit/s link. The kernel caps it at net.core.rmem_max
#: unless we may force it (root / CAP_NET_ADMIN), which we try first.
RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024
#: Python's socket module does not export SO_RCVBUFFORCE; its value on Linux is 33.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform == "linux" else None)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, service: EntropyService) -> None:
        self.service = service

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        # Over UDP the pool's overflow policy applies as is (nobody can be asked to resend).
        with contextlib.suppress(PacketError):  # counted and logged by the service
            self.service.ingest_datagram(data)


def open_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket with the largest receive buffer we can get."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    forced = False
    if _SO_RCVBUFFORCE is not None:
        with contextlib.suppress(OSError):  # not permitted: capped at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
            forced = True
    if not forced:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def start_udp(service: EntropyService, sock: socket.socket) -> asyncio.DatagramTransport:
    """Start receiving on ``sock``; close the returned transport to stop."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(service), sock=sock)
    log.info(
        "udp_listening",
        address=sock.getsockname()[:2],
        receive_buffer=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    )
    return transport
