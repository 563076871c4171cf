"""Wire format v1: the packet codec. Pure: no I/O, no clock, no asyncio.

Theory of operation (DESIGN §3):

A packet is the MessagePack array ``[1, body, tag]``. ``body`` is itself the MessagePack
encoding of ``[id, flags, source, dest, seq, ts_us, data, crc]`` and ``tag`` is
HMAC-SHA256(key, ``b"qrng-dd/1" + body``). Because the tag covers the body's exact bytes, a
receiver checks it *before* parsing the body: an unauthenticated peer can make us parse three
outer items and nothing more (:func:`open_frame`, then :meth:`PacketKey.verify_tag`, then
:func:`parse_body`). The stateful checks (destination, freshness, sequence) live in
:mod:`qrng_dd.gateway.verifier`, which calls these steps in the contract's order.

With the ``ENCRYPTED`` flag, ``data`` is ChaCha20-Poly1305 ciphertext under a key derived by
HKDF from the HMAC key, with ``id[:12]`` as nonce. ``id`` is a random UUIDv4 per packet, so
nonces (96 bits, of which 90 random) collide only near the birthday bound of ~2^45 packets
per key: decades at a thousand packets a second.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qrng_dd.errors import PacketError

VERSION: Final = 1
FLAG_ENCRYPTED: Final = 0x01
FLAG_TELEMETRY: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_ENCRYPTED | FLAG_TELEMETRY

#: 1 MiB of data per packet: large enough for bulk ingest at hundreds of MB/s, small enough
#: that one packet never holds a meaningful share of memory.
MAX_DATA_BYTES: Final = 1_048_576
#: The whole encoded packet may exceed the data by at most 1 KiB of framing; anything larger
#: is refused before it is parsed (DoS: the check costs one ``len``).
MAX_PACKET_BYTES: Final = MAX_DATA_BYTES + 1024

MIN_KEY_BYTES: Final = 32
TAG_BYTES: Final = 32
ID_BYTES: Final = 16
AEAD_TAG_BYTES: Final = 16
_MAC_PREFIX: Final = b"qrng-dd/1"
_HKDF_INFO: Final = b"qrng-dd/1 payload"
_UINT64_MAX: Final = 2**64 - 1
_UINT32_MAX: Final = 2**32 - 1

_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


def valid_id(value: str) -> bool:
    """Whether ``value`` is a legal collector or gateway id (1-64 of ``[A-Za-z0-9._-]``)."""
    return _ID_PATTERN.fullmatch(value) is not None


class PacketKey:
    """The shared secret, with its derived payload cipher ready for use.

    Built once per process: HKDF and the cipher set-up are not repeated per packet.
    ``repr`` never shows the key (P6).
    """

    __slots__ = ("_aead", "_mac")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            msg = f"the HMAC key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}"
            raise ValueError(msg)
        self._mac = hmac.new(key, _MAC_PREFIX, hashlib.sha256)
        payload_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            key
        )
        self._aead = ChaCha20Poly1305(payload_key)

    @classmethod
    def from_hex(cls, text: str) -> PacketKey:
        """Build the key from the hex text of ``QRNG_HMAC_SECRET_KEY``."""
        return cls(bytes.fromhex(text.strip()))

    def __repr__(self) -> str:
        return "PacketKey(<hidden>)"

    def tag(self, body: bytes) -> bytes:
        """HMAC-SHA256 over the domain prefix and ``body``."""
        mac = self._mac.copy()
        mac.update(body)
        return mac.digest()

    def verify_tag(self, body: bytes, tag: bytes) -> None:
        """Check ``tag`` in constant time.

        Raises:
            PacketError: ``bad_mac``.
        """
        if not hmac.compare_digest(self.tag(body), tag):
            raise PacketError("bad_mac", "authentication tag does not match")

    def encrypt(self, packet_id: bytes, data: bytes) -> bytes:
        return self._aead.encrypt(packet_id[:12], data, None)

    def decrypt(self, packet_id: bytes, data: bytes) -> bytes:
        """Open the payload.

        Raises:
            PacketError: ``decrypt``.
        """
        try:
            return self._aead.decrypt(packet_id[:12], data, None)
        except InvalidTag as err:
            raise PacketError("decrypt", "payload does not decrypt") from err


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet's fields, with ``data`` in clear (the codec encrypts when the flag is set)."""

    id: bytes
    flags: int
    source: str
    dest: str
    seq: int
    ts_us: int
    data: bytes = field(repr=False)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def telemetry(self) -> bool:
        return bool(self.flags & FLAG_TELEMETRY)


@dataclass(frozen=True, slots=True)
class Body:
    """The authenticated body's fields, ``data`` as carried (ciphertext when encrypted)."""

    id: bytes
    flags: int
    source: str
    dest: str
    seq: int
    ts_us: int
    data: bytes = field(repr=False)
    crc: int


def encode(packet: Packet, key: PacketKey) -> bytes:
    """Encrypt (if flagged), checksum, sign and frame ``packet``.

    Raises:
        ValueError: a field is out of its range (a local fault, never sent).
    """
    _check_fields(packet.id, packet.flags, packet.source, packet.dest, packet.seq, packet.ts_us)
    if not packet.data:
        msg = "data must not be empty"
        raise ValueError(msg)
    carried = key.encrypt(packet.id, packet.data) if packet.encrypted else packet.data
    if not 1 <= len(carried) <= MAX_DATA_BYTES:
        msg = f"data must be 1..{MAX_DATA_BYTES} bytes as carried, got {len(carried)}"
        raise ValueError(msg)
    body: bytes = msgpack.packb(
        [
            packet.id,
            packet.flags,
            packet.source,
            packet.dest,
            packet.seq,
            packet.ts_us,
            carried,
            zlib.crc32(carried),
        ],
        use_bin_type=True,
    )
    framed: bytes = msgpack.packb([VERSION, body, key.tag(body)], use_bin_type=True)
    return framed


def _check_fields(
    packet_id: bytes, flags: int, source: str, dest: str, seq: int, ts_us: int
) -> None:
    if len(packet_id) != ID_BYTES:
        msg = f"id must be {ID_BYTES} bytes"
        raise ValueError(msg)
    if flags & ~_KNOWN_FLAGS or flags < 0:
        msg = f"unknown flags {flags:#x}"
        raise ValueError(msg)
    if not (valid_id(source) and valid_id(dest)):
        msg = "source and dest must be 1-64 characters of [A-Za-z0-9._-]"
        raise ValueError(msg)
    if not (0 <= seq <= _UINT64_MAX and 0 <= ts_us <= _UINT64_MAX):
        msg = "seq and ts_us must be unsigned 64-bit integers"
        raise ValueError(msg)


def unpack_bounded(data: bytes | memoryview, what: str, **limits: Any) -> Any:
    """MessagePack with every container limit closed unless the caller opens it.

    Raises:
        PacketError: ``malformed``.
    """
    options: dict[str, Any] = {
        "use_list": True,
        "raw": False,
        "max_array_len": 0,
        "max_map_len": 0,
        "max_str_len": 0,
        "max_ext_len": 0,
        "max_bin_len": MAX_PACKET_BYTES,
    }
    options.update(limits)
    try:
        return msgpack.unpackb(data, **options)
    except (ValueError, msgpack.UnpackException) as err:
        raise PacketError("malformed", f"{what} is not valid MessagePack") from err


# MessagePack type bytes this codec reads by hand, with the size of what follows them: the
# length of a bin or str, or the value of an unsigned int (big-endian).
_BIN_HEADS: Final = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_STR_HEADS: Final = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_UINT_HEADS: Final = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_INT_HEADS: Final = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}  # signed: ranges are checked later
_BODY_HEAD: Final = b"\x98"  # fixarray(8)

# The readers below index ``buf`` one byte at a time: reading past its end raises IndexError,
# which the two public parsers turn into ``malformed``. Slices do not raise, so each reader
# checks the end of what it slices.


def _int(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The int at ``pos`` in any MessagePack width, and the position after it."""
    first = buf[pos]
    if first < 0x80:  # positive fixint
        return first, pos + 1
    signed = False
    size = _UINT_HEADS.get(first)
    if size is None:
        size = _INT_HEADS.get(first)
        signed = True
    if size is None:
        raise PacketError("malformed", "body field has the wrong type")
    end = pos + 1 + size
    if end > len(buf):
        raise IndexError
    return int.from_bytes(buf[pos + 1 : end], "big", signed=signed), end


def _span(buf: bytes | memoryview, pos: int, first: int, heads: dict[int, int]) -> tuple[int, int]:
    """Where a bin or str of a 16- or 32-bit length (by ``heads``) at ``pos`` starts and ends."""
    size = heads.get(first)
    if size is None:
        raise PacketError("malformed", "body field has the wrong type")
    start = pos + 1 + size
    return start, start + int.from_bytes(buf[pos + 1 : start], "big")


def _bin(buf: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    """The bin at ``pos`` (a copy) and the position after it."""
    first = buf[pos]
    if first == 0xC4:  # bin8, what every encoder writes for up to 255 bytes
        start = pos + 2
        end = start + buf[pos + 1]
    else:
        start, end = _span(buf, pos, first, _BIN_HEADS)
    if end > len(buf):
        raise IndexError
    return bytes(buf[start:end]), end


def _str(buf: bytes, pos: int) -> tuple[str, int]:
    """The str at ``pos`` (of at most 64 bytes: no id is longer) and the position after it."""
    first = buf[pos]
    if first & 0xE0 == 0xA0:  # fixstr
        start = pos + 1
        end = start + (first & 0x1F)
    elif first == 0xD9:  # str8
        start = pos + 2
        end = start + buf[pos + 1]
    else:
        start, end = _span(buf, pos, first, _STR_HEADS)
    if end - start > 64:
        raise PacketError("malformed", "source or dest is longer than 64 bytes")
    if end > len(buf):
        raise IndexError
    try:
        return buf[start:end].decode(), end
    except UnicodeDecodeError as err:
        raise PacketError("malformed", "source or dest is not UTF-8") from err


def open_frame(raw: bytes | memoryview) -> tuple[bytes, bytes]:
    """Split an encoded packet into ``(body, tag)`` without parsing the body; both are
    copies, so ``raw`` may be a view of a buffer that is reused at once (the UDP receiver).

    Read by hand, not by a MessagePack decoder: a frame is exactly fixarray(3), the int 1, a
    bin and a 32-byte bin, so anything else is refused at its first wrong byte, and input
    without the key can never make us build a container or allocate more than its own size.

    Raises:
        PacketError: ``oversize`` or ``malformed``.
    """
    if len(raw) > MAX_PACKET_BYTES:
        raise PacketError("oversize", f"{len(raw)} bytes is over {MAX_PACKET_BYTES}")
    if raw[:2] != b"\x93\x01":
        raise PacketError("malformed", "not a version 1 frame")
    try:
        body, pos = _bin(raw, 2)
        tag, pos = _bin(raw, pos)
    except IndexError:
        raise PacketError("malformed", "truncated frame") from None
    if len(tag) != TAG_BYTES or pos != len(raw):
        raise PacketError("malformed", "frame is not [1, bin body, 32-byte bin tag]")
    return body, tag


def parse_body(body: bytes) -> Body:
    """Decode the (already authenticated) body and check every field's type and range.

    Read by hand like the frame, field by field in the contract's order: a keyed but broken
    sender still cannot make us build containers (a MessagePack decoder would build any tree
    of arrays before we could look at their types).

    Raises:
        PacketError: ``malformed``.
    """
    if body[:1] != _BODY_HEAD:
        raise PacketError("malformed", "body is not an 8-item array")
    try:
        packet_id, pos = _bin(body, 1)
        flags, pos = _int(body, pos)
        source, pos = _str(body, pos)
        dest, pos = _str(body, pos)
        seq, pos = _int(body, pos)
        ts_us, pos = _int(body, pos)
        data, pos = _bin(body, pos)
        crc, pos = _int(body, pos)
    except IndexError:
        raise PacketError("malformed", "truncated body") from None
    if pos != len(body):
        raise PacketError("malformed", "extra bytes after the body")
    try:
        _check_fields(packet_id, flags, source, dest, seq, ts_us)
    except ValueError as err:
        raise PacketError("malformed", str(err)) from err
    if not 1 <= len(data) <= MAX_DATA_BYTES:
        raise PacketError("malformed", "data length out of range")
    if flags & FLAG_ENCRYPTED and len(data) <= AEAD_TAG_BYTES:
        raise PacketError("malformed", "encrypted data shorter than its AEAD tag")
    if not 0 <= crc <= _UINT32_MAX:
        raise PacketError("malformed", "crc is not a uint32")
    return Body(packet_id, flags, source, dest, seq, ts_us, data, crc)


def check_crc(body: Body) -> None:
    """Raises: PacketError: ``bad_crc``."""
    if zlib.crc32(body.data) != body.crc:
        raise PacketError("bad_crc", "CRC32 of data does not match")


def open_body(body: Body, key: PacketKey) -> Packet:
    """Decrypt the body's data if needed and return the packet in clear.

    Raises:
        PacketError: ``decrypt``.
    """
    data = key.decrypt(body.id, body.data) if body.flags & FLAG_ENCRYPTED else body.data
    return Packet(body.id, body.flags, body.source, body.dest, body.seq, body.ts_us, data)


def decode(raw: bytes, key: PacketKey) -> Packet:
    """Every stateless check of DESIGN §3, in order; no destination or freshness check.

    Raises:
        PacketError: with the reason of the first failed check.
    """
    body_bytes, tag = open_frame(raw)
    key.verify_tag(body_bytes, tag)
    body = parse_body(body_bytes)
    check_crc(body)
    return open_body(body, key)
