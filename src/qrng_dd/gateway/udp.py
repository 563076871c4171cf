"""The gateway's UDP receiver: one packet per datagram, verified exactly like a push.

Nothing is ever sent back: there is no reply to a datagram, valid or not, so the receiver
works across a link that physically carries nothing in the other direction (P1). A refused
datagram is only counted (and, throttled, logged). The socket gets a large receive buffer so
bursts are absorbed by the kernel instead of being lost while the loop is busy.

Datagrams are read in batches: each time the socket becomes readable, up to :data:`BATCH`
of them, each into the same preallocated buffer (``recv_into``: no allocation per datagram;
the verifier copies out the few fields it keeps). An asyncio datagram transport reads one
datagram per loop wake-up and allocates a new bytes object for each.
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


#: Datagrams read per wake-up at most: enough to amortise the wake-up, few enough that HTTP
#: requests on the same loop wait at most a few milliseconds (64 jumbo datagrams ~ 3 ms).
BATCH = 64
#: The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
MAX_DATAGRAM = 65_507


class UdpReceiver:
    """Drains ``sock`` into ``service`` from the running loop; :meth:`close` stops it."""

    def __init__(self, service: EntropyService, sock: socket.socket) -> None:
        self._service = service
        self._sock = sock
        self._view = memoryview(bytearray(MAX_DATAGRAM))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        recv_into, view, ingest = self._sock.recv_into, self._view, self._service.ingest_datagram
        for _ in range(BATCH):
            try:
                size = recv_into(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # nothing a datagram socket should raise; keep serving
                log.warning("udp_receive_failed", error=str(err))
                return
            # Over UDP the pool's overflow policy applies as is (nobody can be asked to resend).
            with contextlib.suppress(PacketError):  # counted and logged by the service
                ingest(view[:size])

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


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


def start_udp(service: EntropyService, sock: socket.socket) -> UdpReceiver:
    """Start receiving on ``sock`` (on the running loop); close the receiver to stop."""
    receiver = UdpReceiver(service, sock)
    log.info(
        "udp_listening",
        address=sock.getsockname()[:2],
        receive_buffer=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    )
    return receiver
