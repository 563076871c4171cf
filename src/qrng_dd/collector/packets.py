"""Building the packets for each push target, with their sequences. Pure; the clock is injected.

Theory of operation (DESIGN §3, §6):

- **Two sequences per target**, data and telemetry, both starting at this process's start time
  in microseconds, so a restarted collector continues above its previous run without storing
  anything. A heartbeat never waits behind a data packet the gateway cannot take yet (507),
  nor makes that packet's retry look like a replay.
- **At most once per byte.** A data packet is built once, when its bytes leave the outbox; a
  retry resends the identical bytes (same seq, same id), which the gateway accepts at most
  once. Bytes are never packed again under a new seq.
- **Settled seq.** Heartbeats carry the last data seq whose fate is settled (delivered,
  refused, expired, or sent as a datagram), so the gateway counts loss at the tail too.
- Each packet gets a fresh random UUIDv4 ``id``: with ``QRNG_ENCRYPT_PAYLOAD`` its first
  12 bytes are the AEAD nonce (see :mod:`qrng_dd.wire.packet`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qrng_dd.wire import packet as wire
from qrng_dd.wire.telemetry import Telemetry, encode_telemetry


def uuid4_bytes() -> bytes:
    """A random (version 4) UUID's 16 bytes."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded data packet: its seq and wire bytes, ready to be sent (and resent)."""

    seq: int
    raw: bytes


class PacketBuilder:
    """Encodes, signs (and encrypts) the packets of one collector, sequenced per target."""

    def __init__(
        self,
        key: wire.PacketKey,
        collector_id: str,
        targets: Sequence[str],
        *,
        encrypt: bool,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], bytes] = uuid4_bytes,
    ) -> None:
        """
        Args:
            key: the packet key (``QRNG_HMAC_SECRET_KEY``).
            collector_id: the packets' ``source``.
            targets: the gateway ids, each the ``dest`` of its packets.
            encrypt: set ``FLAG_ENCRYPTED`` on every packet.
            clock: wall-clock seconds; read once for the start and once per packet (``ts_us``).
            new_id: the packet id generator.
        """
        self._key = key
        self._source = collector_id
        self._flags = wire.FLAG_ENCRYPTED if encrypt else 0
        self._clock = clock
        self._new_id = new_id
        self.started = clock()
        #: Where every sequence starts: the start time in microseconds (DESIGN §3).
        self.seq_start = int(self.started * 1_000_000)
        self._data_seq = dict.fromkeys(targets, self.seq_start)
        self._telemetry_seq = dict.fromkeys(targets, self.seq_start)
        self._settled = dict.fromkeys(targets, 0)

    def uptime(self) -> float:
        """Seconds since the start, to the millisecond."""
        return round(self._clock() - self.started, 3)

    def data(self, gateway_id: str, data: bytes) -> Outgoing:
        """The next data packet for ``gateway_id``, carrying ``data``."""
        self._data_seq[gateway_id] += 1
        seq = self._data_seq[gateway_id]
        return Outgoing(seq, self._encode(gateway_id, seq, self._flags, data))

    def telemetry(self, gateway_id: str, document: Telemetry) -> bytes:
        """The next heartbeat for ``gateway_id``, on its own sequence."""
        self._telemetry_seq[gateway_id] += 1
        seq = self._telemetry_seq[gateway_id]
        data = encode_telemetry(document)
        return self._encode(gateway_id, seq, self._flags | wire.FLAG_TELEMETRY, data)

    def settle(self, gateway_id: str, seq: int) -> None:
        """Record that the data packet ``seq`` to ``gateway_id`` will not be sent again."""
        self._settled[gateway_id] = seq

    def settled(self, gateway_id: str) -> int:
        """The last settled data seq to ``gateway_id`` (0 before the first)."""
        return self._settled[gateway_id]

    def _encode(self, gateway_id: str, seq: int, flags: int, data: bytes) -> bytes:
        packet = wire.Packet(
            id=self._new_id(),
            flags=flags,
            source=self._source,
            dest=gateway_id,
            seq=seq,
            ts_us=int(self._clock() * 1_000_000),
            data=data,
        )
        return wire.encode(packet, self._key)
