"""Sending packets to the gateways: one :class:`Transport` interface, HTTP(S) and UDP behind it.

Theory of operation (DESIGN §3, §6):

- A transport sends one encoded packet and says what became of it, as an :class:`Outcome`.
  Nothing here listens (P1): an HTTP transport reads only the answer to its own request, and a
  UDP transport's socket only sends.
- **At most once per byte.** :class:`Delivery` resends the *identical* packet while the outcome
  is :attr:`Outcome.RETRY`, with backoff and jitter; the gateway accepts it at most once. After a
  ``409 replay`` (our earlier attempt got through but its answer was lost) the packet counts as
  delivered. A permanent refusal, or a packet too old to be accepted, is dropped and counted:
  its bytes are never sent again under a new sequence.
- **UDP** targets get one packet per datagram, paced to ``QRNG_UDP_MAX_BITRATE`` so a burst
  does not overflow the link or the gateway's socket buffer. A datagram is never retried:
  nothing comes back to say it was lost.
"""

from __future__ import annotations

import enum
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import httpx
import structlog

from qrng_dd.addresses import PushTarget
from qrng_dd.collector.schedule import backoff_delay
from qrng_dd.wire import packet as wire

log = structlog.get_logger("qrng_dd.collector")

#: Largest clear payload per HTTP packet: the AEAD tag must still fit in 1 MiB of data.
HTTP_CHUNK = wire.MAX_DATA_BYTES - wire.AEAD_TAG_BYTES
#: A packet is given up after this long: well inside the gateway's default 300 s TTL, so a
#: retry never arrives only to be refused as too old.
PACKET_TTL_GUARD_S = 120.0
#: Sleeps shorter than this are not worth a trip through the event loop.
_PACE_SLACK_S = 0.002


class Outcome(enum.Enum):
    """What became of one packet (or one attempt to send it)."""

    #: 200, or a datagram handed to the network.
    DELIVERED = "delivered"
    #: 409: an earlier attempt got through; the gateway has the bytes once already.
    REPLAYED = "replayed"
    #: No answer, 429, 5xx or 507 (pool full): send the identical packet again later.
    RETRY = "retry"
    #: Any other answer (wrong key, wrong dest, malformed), or a datagram the OS would not send.
    REFUSED = "refused"
    #: Too old to be accepted any more, or the final flush ended first.
    EXPIRED = "expired"

    @property
    def delivered(self) -> bool:
        """The gateway has the bytes (now or from an earlier attempt)."""
        return self in (Outcome.DELIVERED, Outcome.REPLAYED)


def outcome_for_status(status: int) -> Outcome:
    """The outcome a gateway's HTTP status means for the packet pushed."""
    if status == 200:
        return Outcome.DELIVERED
    if status == 409:
        return Outcome.REPLAYED
    if status in (408, 429, 507) or status >= 500:
        return Outcome.RETRY
    return Outcome.REFUSED


class Transport(Protocol):
    """Sends packets to one gateway."""

    #: The largest clear payload one packet may carry on this transport.
    chunk_size: int

    async def send(self, raw: bytes) -> Outcome:
        """Send one encoded packet once: DELIVERED, REPLAYED, RETRY or REFUSED."""
        ...


class HttpTransport:
    """``POST`` to an HTTP(S) gateway's ``/push`` on a shared client."""

    chunk_size = HTTP_CHUNK

    def __init__(
        self,
        target: PushTarget,
        client: httpx.AsyncClient,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        """
        Args:
            target: the gateway.
            client: the push client (:mod:`qrng_dd.collector.clients`); the caller closes it.
            on_error: called once per failed attempt (the caller counts them).
        """
        self.target = target
        self._client = client
        self._on_error = on_error or _nothing

    async def send(self, raw: bytes) -> Outcome:
        gateway = self.target.gateway_id
        try:
            response = await self._client.post(
                self.target.url, content=raw, headers={"content-type": "application/x-msgpack"}
            )
        except Exception as err:  # any failure is one failed attempt, see below
            # Expected: httpx.HTTPError, and a bare ssl.SSLError (httpcore wraps TLS errors only
            # during the handshake; under TLS 1.3 a gateway's refusal of our client certificate
            # arrives on the first read). Not expected but seen: httpx under uvloop raises
            # AttributeError when a connection is reset right after connect. A collector that
            # died of a library's surprise would stop every gateway's feed, so whatever it is
            # costs one attempt, is counted, and is named in the log.
            self._on_error()
            expected = isinstance(err, (httpx.HTTPError, ssl.SSLError))
            log.warning("push_failed", gateway=gateway, error=type(err).__name__, expected=expected)
            return Outcome.RETRY
        code = response.status_code
        outcome = outcome_for_status(code)
        if outcome.delivered:
            return outcome
        self._on_error()
        if outcome is Outcome.RETRY:
            if code != 507:  # a full pool is the gateway's normal back-pressure, not news
                log.warning("push_failed", gateway=gateway, status=code)
        else:
            log.error("push_refused", gateway=gateway, status=code, detail=_detail(response))
        return outcome


class Pacer:
    """A leaky bucket: how long to wait before sending ``n`` more bytes at ``rate`` bytes/s."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._budget_at = clock()  # when the budget is back to zero

    def delay(self, n: int) -> float:
        """Book ``n`` bytes; the seconds to wait before sending them (0 if not worth it)."""
        now = self._clock()
        self._budget_at = max(self._budget_at, now) + n / self._rate
        wait = self._budget_at - now
        return wait if wait > _PACE_SLACK_S else 0.0


class UdpTransport:
    """One datagram per packet on a non-blocking socket that only ever sends (P1)."""

    def __init__(
        self,
        target: PushTarget,
        chunk_size: int,
        *,
        pacer: Pacer | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        """
        Args:
            target: the gateway's ``udp://host:port``.
            chunk_size: ``QRNG_UDP_PAYLOAD_BYTES``.
            pacer: paces the datagrams (``QRNG_UDP_MAX_BITRATE``); None sends at once.
            on_error: called once per datagram the OS refused.
        """
        self.target = target
        self.chunk_size = chunk_size
        self._pacer = pacer
        self._on_error = on_error or _nothing
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def close(self) -> None:
        self._sock.close()

    async def send(self, raw: bytes) -> Outcome:
        if self._pacer is not None and (wait := self._pacer.delay(len(raw))):
            await anyio.sleep(wait)
        try:
            await self._sendto(raw)
        except OSError as err:
            # No route, buffer full: the datagram is lost like any other on the link.
            self._on_error()
            log.warning("udp_send_failed", gateway=self.target.gateway_id, error=str(err))
            return Outcome.REFUSED
        return Outcome.DELIVERED

    async def _sendto(self, raw: bytes) -> None:
        """Send one datagram, waiting for room when there is none.

        A plain ``sendto`` and a wait for writability, not ``loop.sock_sendto``: uvloop, which
        the services run on, does not implement that (NotImplementedError).
        """
        while True:
            try:
                self._sock.sendto(raw, (self.target.host, self.target.port))
            except BlockingIOError:
                await anyio.wait_writable(self._sock)
            else:
                return


class Delivery:
    """Gets packets to one gateway at most once each, retrying the identical packet."""

    def __init__(
        self,
        transport: Transport,
        *,
        ttl_s: float = PACKET_TTL_GUARD_S,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[int], float] = backoff_delay,
    ) -> None:
        self.transport = transport
        self._ttl_s = ttl_s
        self._clock = clock
        self._backoff = backoff
        #: Failed attempts since the last delivery: a gateway that keeps failing is retried
        #: ever more slowly, across packets, until it takes one.
        self._attempt = 0

    async def deliver(self, raw: bytes, done: anyio.Event) -> Outcome:
        """Send ``raw`` until it is delivered, refused or expired, or until ``done``.

        Returns:
            DELIVERED, REPLAYED, REFUSED or EXPIRED; never RETRY.
        """
        built = self._clock()
        while not done.is_set():
            outcome = await self.transport.send(raw)
            if outcome.delivered:
                self._attempt = 0
                return outcome
            if outcome is not Outcome.RETRY:
                return outcome
            if self._clock() - built > self._ttl_s:
                return Outcome.EXPIRED
            self._attempt += 1
            with anyio.move_on_after(self._backoff(self._attempt)):
                await done.wait()
        return Outcome.EXPIRED


def _nothing() -> None:
    pass


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail", ""))[:200] if isinstance(body, dict) else ""
