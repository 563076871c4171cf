"""Packet mutants for fuzzing the gateway's verifier (issue 19): pure, seeded, no I/O.

Theory of operation. A :class:`Mutator` turns valid seed packets into invalid ones, one named
*kind* at a time, from a ``random.Random`` it is given, so a run is reproduced by its seed.
Kinds come in two families:

- *Frame* kinds (``bitflip``, ``truncate``, ``forged_tag``...) damage the encoded packet as a
  peer without the key would: they never get past the tag.
- *Signed* kinds (``s_…``) build a malformed or stale or replayed body and then sign it with the
  real key, so it passes the MAC and reaches the parsers and checks behind it: this is what a
  compromised or buggy collector can send, and the only way to fuzz what the tag protects.

Every mutant carries the verdict of :class:`Judge`, a reference model of DESIGN §3 written
from the contract alone (lenient ``msgpack.unpackb``, its own HMAC, HKDF and AEAD, its own
id alphabet), not from the product's parser. Tests assert that the gateway refuses each mutant
for one of the reasons the model allows: a refusal under the wrong label is a finding too.
Mutants the model finds *valid* are not mutants (a flipped bit in a plain packet's id is still
a valid packet): the mutator draws again and counts them under ``valid_skipped``.

The model's one deliberate strictness is the product's: a frame must begin with fixarray(3)
and the positive fixint 1 (DESIGN §3 names that array; every MessagePack encoder writes it
that way), so a non-canonical header is ``malformed`` even when the tag would match.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qrng_dd.errors import RejectReason

#: The contract's limits (DESIGN §3), restated here so the model does not read the product's.
MAX_DATA: Final = 1_048_576
MAX_PACKET: Final = MAX_DATA + 1024
UINT64: Final = 2**64 - 1
UINT32: Final = 2**32 - 1
ID_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
ENCRYPTED: Final = 1
TELEMETRY: Final = 2
_FRAME_HEAD: Final = b"\x93\x01"

Verdict = frozenset[RejectReason]


# -- the key, independently of qrng_dd.wire -----------------------------------------------


class Secret:
    """The shared key as DESIGN §3 defines its uses: the tag, and the payload cipher."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        payload_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"qrng-dd/1 payload"
        ).derive(key)
        self._aead = ChaCha20Poly1305(payload_key)

    def sign(self, body: bytes) -> bytes:
        """HMAC-SHA256 over the domain prefix and ``body``."""
        return hmac.new(self.key, b"qrng-dd/1" + body, hashlib.sha256).digest()

    def seal(self, packet_id: bytes, data: bytes) -> bytes:
        return self._aead.encrypt(packet_id[:12], data, None)

    def opens(self, packet_id: bytes, data: bytes) -> bool:
        """Whether ``data`` decrypts under the nonce ``packet_id[:12]``."""
        try:
            self._aead.decrypt(packet_id[:12], data, None)
        except InvalidTag:
            return False
        return True


# -- MessagePack by hand, for encodings no encoder would write ------------------------------


def pack(value: object) -> bytes:
    """The canonical MessagePack encoding of ``value`` (bin for bytes)."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def frame(body: bytes, tag: bytes) -> bytes:
    """The outer array ``[1, bin body, bin tag]`` (DESIGN §3)."""
    return _FRAME_HEAD + pack(body) + pack(tag)


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n <= 0xFFFF:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n <= 0xFFFF:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def nested(depth: int, leaf: bytes = b"\xc0") -> bytes:
    """``depth`` one-item arrays around ``leaf``: recursion depth for the price of bytes."""
    return b"\x91" * depth + leaf


def tree(arity: int, budget: int) -> bytes:
    """The deepest full ``arity``-ary tree of empty arrays that fits in ``budget`` bytes.

    Each byte decodes to one container object: the shape that makes a MessagePack decoder
    allocate the most per byte of input while every array stays within a small length limit.
    """
    encoded = b"\x90"
    while True:
        bigger = bytes([0x90 | arity]) + encoded * arity
        if len(bigger) > budget:
            return encoded
        encoded = bigger


#: One encoding of every MessagePack family (and a few edge values): what a field is swapped
#: for in ``s_type_swap``. Floats include NaN and infinity; ext includes a bad timestamp.
OTHER_TYPES: Final[tuple[bytes, ...]] = (
    b"\xc0",  # nil
    b"\xc2",  # false
    b"\xc3",  # true
    b"\x00",  # positive fixint 0
    b"\x7f",
    b"\xff",  # negative fixint -1
    b"\xcc\xff",
    b"\xcd\xff\xff",
    b"\xce\xff\xff\xff\xff",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
    b"\xd0\x80",
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int64 min
    b"\xca\x3f\x80\x00\x00",  # float32 1.0
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # float64 NaN
    b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # float64 +inf
    b"\xa0",  # empty str
    b"\xa9collector",
    b"\xd9\x02\xc3\xa9",  # str8 "é" (valid UTF-8, outside the id alphabet)
    b"\xa2\xff\xfe",  # str with invalid UTF-8
    b"\xc4\x00",  # empty bin
    b"\xc4\x10" + bytes(16),
    b"\x90",  # empty array
    b"\x93\x01\x02\x03",
    b"\x80",  # empty map
    b"\x81\xa2id\x01",
    b"\xd4\x05\x00",  # fixext1
    b"\xc7\x00\x05",  # ext8, length 0
    b"\xd6\xff\x00\x00\x00\x00",  # timestamp32
    b"\xd4\xff\x00",  # timestamp with a length no timestamp has
)

#: Headers that declare far more than any packet holds (4 GiB bins and strs, 2^32-1 items).
HUGE_HEADERS: Final[tuple[bytes, ...]] = (
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xdb\xff\xff\xff\xff",  # str32
    b"\xdd\xff\xff\xff\xff",  # array32
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xc9\xff\xff\xff\xff\x05",  # ext32
    b"\xc5\xff\xff",  # bin16
    b"\xdc\xff\xff",  # array16
)


# -- the reference model --------------------------------------------------------------------


@dataclass
class Judge:
    """DESIGN §3 as a model: the reasons a gateway may refuse a packet with, or None if valid.

    ``last_seq`` maps ``(source, telemetry)`` to the last accepted ``seq`` of that stream.
    """

    secret: Secret
    gateway_id: str
    now_us: int
    ttl_us: int
    skew_us: int
    not_before_us: int
    last_seq: dict[tuple[str, bool], int] = field(default_factory=dict)

    def verdict(self, raw: bytes) -> Verdict | None:
        """The reasons a gateway may give for refusing ``raw``; None if it must accept it."""
        if len(raw) > MAX_PACKET:
            return frozenset({"oversize"})
        outer = _lenient(raw)
        if not (
            raw[:2] == _FRAME_HEAD
            and isinstance(outer, list)
            and len(outer) == 3
            and isinstance(outer[1], bytes)
            and isinstance(outer[2], bytes)
            and len(outer[2]) == 32
        ):
            return frozenset({"malformed"})
        body, tag = outer[1], outer[2]
        if not hmac.compare_digest(self.secret.sign(body), tag):
            return frozenset({"bad_mac"})
        return self.body_verdict(body)

    def body_verdict(self, body: bytes) -> Verdict | None:
        """The verdict on an authenticated body."""
        fields = _lenient(body)
        if not (isinstance(fields, list) and len(fields) == 8 and _well_typed(fields)):
            return frozenset({"malformed"})
        packet_id, flags, source, dest, seq, ts_us, data, crc = fields
        later = self._stateful(packet_id, flags, source, dest, seq, ts_us, data, crc)
        if flags & ENCRYPTED and len(data) <= 16:
            # Too short to hold an AEAD tag: the product says so as ``malformed`` before the
            # stateful checks; the contract alone would only know it at decryption.
            return frozenset({"malformed", later or "decrypt"})
        return None if later is None else frozenset({later})

    def _stateful(
        self,
        packet_id: bytes,
        flags: int,
        source: str,
        dest: str,
        seq: int,
        ts_us: int,
        data: bytes,
        crc: int,
    ) -> RejectReason | None:
        if dest != self.gateway_id:
            return "wrong_dest"
        if zlib.crc32(data) != crc:
            return "bad_crc"
        if ts_us > self.now_us + self.skew_us:
            return "future"
        if ts_us < self.now_us - self.ttl_us or ts_us < self.not_before_us:
            return "stale"
        last = self.last_seq.get((source, bool(flags & TELEMETRY)))
        if last is not None and seq <= last:
            return "replay"
        if flags & ENCRYPTED and not self.secret.opens(packet_id, data):
            return "decrypt"
        return None


def _lenient(data: bytes) -> object:
    """Any MessagePack value, or None for bytes that are not exactly one.

    A nil body or frame is malformed as surely as undecodable bytes, so None serves both.
    (A map keyed by a map fails with ``TypeError``: unhashable.)
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= ID_ALPHABET


def _is_uint(value: object, top: int) -> bool:
    return type(value) is int and 0 <= value <= top


def _well_typed(fields: Sequence[object]) -> bool:
    packet_id, flags, source, dest, seq, ts_us, data, crc = fields
    return (
        isinstance(packet_id, bytes)
        and len(packet_id) == 16
        and _is_uint(flags, ENCRYPTED | TELEMETRY)
        and _is_id(source)
        and _is_id(dest)
        and _is_uint(seq, UINT64)
        and _is_uint(ts_us, UINT64)
        and isinstance(data, bytes)
        and 0 < len(data) <= MAX_DATA
        and _is_uint(crc, UINT32)
    )


# -- seeds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """The eight body fields of one valid packet, ``data`` as carried."""

    id: bytes
    flags: int
    source: str
    dest: str
    seq: int
    ts_us: int
    data: bytes
    crc: int

    def items(self) -> list[object]:
        return [self.id, self.flags, self.source, self.dest, self.seq, self.ts_us, self.data,
                self.crc]  # fmt: skip

    def body(self) -> bytes:
        return pack(self.items())

    def encoded_items(self) -> list[bytes]:
        return [pack(item) for item in self.items()]


def make_seed(
    secret: Secret,
    plain: bytes,
    *,
    packet_id: bytes,
    flags: int,
    source: str,
    dest: str,
    seq: int,
    ts_us: int,
) -> Seed:
    """A valid packet's fields: encrypted when ``flags`` says so, with its CRC."""
    data = secret.seal(packet_id, plain) if flags & ENCRYPTED else plain
    return Seed(packet_id, flags, source, dest, seq, ts_us, data, zlib.crc32(data))


def with_fields(seed: Seed, **changes: object) -> Seed:
    """``seed`` with some fields changed and the CRC recomputed over the (new) data."""
    changed = replace(seed, **changes)  # type: ignore[arg-type]
    return replace(changed, crc=zlib.crc32(changed.data))


# -- the mutators ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One invalid packet, the kind that made it, and the reasons it may be refused for."""

    kind: str
    raw: bytes
    expect: Verdict


Kind = Callable[["Mutator", Seed], bytes]


@dataclass
class Mutator:
    """Draws mutants of ``seeds`` for ``judge``, reproducibly from ``rng``.

    ``max_bytes`` caps a mutant's size (a UDP datagram holds at most 65,507 bytes);
    ``oversize`` mutants are only drawn when the cap allows them. ``also``: other judges
    (the same gateway at another time) that must reach the same verdict, so a mutant sent
    to a gateway on a real clock is refused the same way whenever it arrives.
    """

    judge: Judge
    seeds: Sequence[Seed]
    rng: random.Random
    max_bytes: int = MAX_PACKET + 4096
    also: Sequence[Judge] = ()
    valid_skipped: Counter[str] = field(default_factory=Counter)

    @property
    def secret(self) -> Secret:
        return self.judge.secret

    def kinds(self) -> list[str]:
        """Every kind this mutator can draw (``oversize`` only if ``max_bytes`` allows)."""
        return [k for k in KINDS if k != "oversize" or self.max_bytes > MAX_PACKET + 64]

    def draw(self, kind: str) -> Mutant:
        """One mutant of ``kind``; redraws while the model finds the packet valid."""
        make = KINDS[kind]
        for _ in range(1000):
            raw = make(self, self.rng.choice(self.seeds))[: self.max_bytes]
            expect = self.judge.verdict(raw)
            if expect is not None and all(j.verdict(raw) == expect for j in self.also):
                return Mutant(kind, raw, expect)
            self.valid_skipped[kind] += 1
        msg = f"mutator {kind} made 1000 valid packets in a row"
        raise AssertionError(msg)

    def stream(self, count: int, kinds: Sequence[str] | None = None) -> Iterator[Mutant]:
        """``count`` mutants, the kinds taken in turn so each gets its share."""
        chosen = list(kinds or self.kinds())
        for i in range(count):
            yield self.draw(chosen[i % len(chosen)])

    # helpers for the kinds

    def signed(self, body: bytes) -> bytes:
        return frame(body, self.secret.sign(body))

    def signed_items(self, items: Sequence[bytes], header: bytes | None = None) -> bytes:
        """Sign a body made of pre-encoded items under ``header`` (default: their count)."""
        body = (array_header(len(items)) if header is None else header) + b"".join(items)
        return self.signed(body)

    def flip_bits(self, data: bytes, most: int = 8) -> bytes:
        buf = bytearray(data)
        for _ in range(self.rng.randint(1, most)):
            bit = self.rng.randrange(len(buf) * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
        return bytes(buf)

    def fresh_id(self) -> bytes:
        return self.rng.randbytes(16)


# frame kinds: what a peer without the key can do --------------------------------------------


def _bitflip(m: Mutator, seed: Seed) -> bytes:
    return m.flip_bits(m.signed(seed.body()))


def _byteset(m: Mutator, seed: Seed) -> bytes:
    buf = bytearray(m.signed(seed.body()))
    for _ in range(m.rng.randint(1, 4)):
        buf[m.rng.randrange(len(buf))] = m.rng.choice((0x00, 0x01, 0x7F, 0x80, 0xC0, 0xC4, 0xC6,
                                                        0xD9, 0xDD, 0xDF, 0xFF))  # fmt: skip
    return bytes(buf)


def _truncate(m: Mutator, seed: Seed) -> bytes:
    raw = m.signed(seed.body())
    return raw[: m.rng.randrange(len(raw))]


def _extend(m: Mutator, seed: Seed) -> bytes:
    return m.signed(seed.body()) + m.rng.randbytes(m.rng.randint(1, 64))


def _oversize(m: Mutator, seed: Seed) -> bytes:
    raw = m.signed(seed.body())
    return raw + bytes(MAX_PACKET + 1 - len(raw) + m.rng.randrange(64))


def _splice(m: Mutator, seed: Seed) -> bytes:
    a, b = m.signed(seed.body()), m.signed(m.rng.choice(m.seeds).body())
    return a[: m.rng.randrange(len(a) + 1)] + b[m.rng.randrange(len(b) + 1) :]


def _forged_tag(m: Mutator, seed: Seed) -> bytes:
    body = seed.body()
    choice = m.rng.randrange(4)
    if choice == 0:
        tag = m.rng.randbytes(32)
    elif choice == 1:
        tag = Secret(m.rng.randbytes(32)).sign(body)  # someone else's key
    elif choice == 2:
        tag = m.secret.sign(m.rng.choice(m.seeds).body() + b"\x00")  # another body's tag
    else:
        tag = hmac.new(m.secret.key, body, hashlib.sha256).digest()  # no domain prefix
    return frame(body, tag)


def _frame_shape(m: Mutator, seed: Seed) -> bytes:
    body = seed.body()
    tag = m.secret.sign(body)
    shapes = (
        b"\x93\x00" + pack(body) + pack(tag),  # version 0
        b"\x93\x02" + pack(body) + pack(tag),
        b"\x93\xff" + pack(body) + pack(tag),  # version -1
        b"\x93\xcc\x01" + pack(body) + pack(tag),  # version 1, non-canonical uint8
        b"\xdc\x00\x03\x01" + pack(body) + pack(tag),  # array16 of 3
        b"\x92\x01" + pack(body),
        b"\x94\x01" + pack(body) + pack(tag) + b"\xc0",
        _FRAME_HEAD + pack(body) + pack(tag[:31]),
        _FRAME_HEAD + pack(body) + pack(tag + b"\x00"),
        _FRAME_HEAD + pack(body) + pack(tag.hex()[:32]),  # tag as str
        _FRAME_HEAD + pack(body.hex()[:60]) + pack(tag),  # body as str
        _FRAME_HEAD + pack(seed.items()) + pack(tag),  # body as an array, not a bin
        _FRAME_HEAD + b"\xc0" + pack(tag),
        b"\x83\x01" + pack(body) + b"\x02" + pack(tag) + b"\x03\xc0",  # a map
        pack(body),
        pack(tag),
        b"",
    )
    return m.rng.choice(shapes)


def _frame_headers(m: Mutator, seed: Seed) -> bytes:
    tail = seed.body()[: m.rng.randrange(64)]
    return _FRAME_HEAD + m.rng.choice(HUGE_HEADERS) + tail


def _frame_nesting(m: Mutator, seed: Seed) -> bytes:
    tag = m.secret.sign(seed.body())
    depth = m.rng.choice((2, 100, 1023, 1024, 1025, 5000, 50_000))
    if m.rng.randrange(2):
        return _FRAME_HEAD + nested(depth) + pack(tag)
    return _FRAME_HEAD + pack(seed.body()) + nested(depth)


# signed kinds: a valid tag over a bad body ------------------------------------------------------


def _s_bitflip(m: Mutator, seed: Seed) -> bytes:
    return m.signed(m.flip_bits(seed.body()))


def _s_truncate(m: Mutator, seed: Seed) -> bytes:
    body = seed.body()
    return m.signed(body[: m.rng.randrange(len(body))])


def _s_extend(m: Mutator, seed: Seed) -> bytes:
    return m.signed(seed.body() + m.rng.choice((b"\xc0", b"\x00", m.rng.randbytes(8))))


def _s_type_swap(m: Mutator, seed: Seed) -> bytes:
    items = seed.encoded_items()
    items[m.rng.randrange(8)] = m.rng.choice(OTHER_TYPES)
    return m.signed_items(items)


def _s_wrong_length(m: Mutator, seed: Seed) -> bytes:
    """A field's header declares a length other than what follows (4 GiB included)."""
    items = seed.encoded_items()
    i = m.rng.choice((0, 2, 3, 6))  # id, source, dest, data: the sized fields
    value = seed.items()[i]
    payload = value.encode() if isinstance(value, str) else value
    assert isinstance(payload, bytes)
    declared = m.rng.choice((len(payload) + 1, max(0, len(payload) - 1), 255, 0xFFFF, UINT32))
    marker = b"\xdb" if isinstance(value, str) else b"\xc6"
    items[i] = marker + struct.pack(">I", declared) + payload
    return m.signed_items(items)


def _s_huge_header(m: Mutator, seed: Seed) -> bytes:
    if m.rng.randrange(2):
        return m.signed(m.rng.choice(HUGE_HEADERS) + seed.body()[1:])
    items = seed.encoded_items()
    items[m.rng.randrange(8)] = m.rng.choice(HUGE_HEADERS)
    return m.signed_items(items)


def _s_nesting(m: Mutator, seed: Seed) -> bytes:
    depth = m.rng.choice((8, 100, 1023, 1024, 1025, 5000, 50_000))
    if m.rng.randrange(4) == 0:
        return m.signed(nested(depth, seed.body()))
    items = seed.encoded_items()
    items[m.rng.randrange(8)] = nested(depth, m.rng.choice(OTHER_TYPES))
    return m.signed_items(items)


def _s_map_body(m: Mutator, seed: Seed) -> bytes:
    """The body as a map: the fields under names or indexes, with duplicates, extras, gaps."""
    names: list[object] = ["id", "flags", "source", "dest", "seq", "ts_us", "data", "crc"]
    keys = names if m.rng.randrange(2) else list(range(8))
    pairs = [pack(k) + v for k, v in zip(keys, seed.encoded_items(), strict=True)]
    shape = m.rng.randrange(3)
    if shape == 0:
        pairs.append(pairs[m.rng.randrange(8)])  # a duplicate key
    elif shape == 1:
        pairs.append(pack("extra") + b"\xc0")
    else:
        del pairs[m.rng.randrange(8)]
    return m.signed(map_header(len(pairs)) + b"".join(pairs))


def _s_arity(m: Mutator, seed: Seed) -> bytes:
    """Seven or nine items, or the right count declared over the wrong number of items."""
    items = seed.encoded_items()
    shape = m.rng.randrange(4)
    if shape == 0:
        del items[m.rng.randrange(8)]
        return m.signed_items(items)
    if shape == 1:
        items.insert(m.rng.randrange(9), m.rng.choice(OTHER_TYPES))
        return m.signed_items(items)
    if shape == 2:
        return m.signed_items(items[:7], header=array_header(8))
    return m.signed_items([*items, b"\xc0"], header=array_header(8))


def _s_bad_value(m: Mutator, seed: Seed) -> bytes:
    """One field out of its contract range, everything else right."""
    bad: list[dict[str, object]] = [
        {"id": seed.id[:15]},
        {"id": seed.id + b"\x00"},
        {"id": b""},
        {"flags": 4},
        {"flags": 0x80},
        {"flags": -1},
        {"source": ""},
        {"source": "c" * 65},
        {"source": "coll ector"},
        {"source": "collector/1"},
        {"source": "collectör"},
        {"dest": ""},
        {"dest": "g" * 65},
        {"dest": "gate\nway"},
        {"seq": -1},
        {"ts_us": -1},
        {"data": b""},
    ]
    if seed.flags & ENCRYPTED:
        bad.append({"data": seed.data[:16]})
        bad.append({"data": seed.data[: m.rng.randint(1, 15)]})
    return m.signed(with_fields(seed, **m.rng.choice(bad)).body())


def _s_bad_crc(m: Mutator, seed: Seed) -> bytes:
    crc = m.rng.choice(((seed.crc + 1) & UINT32, seed.crc ^ 0x80000000, 0, UINT32))
    if crc == seed.crc:
        crc ^= 1
    if m.rng.randrange(2):
        return m.signed(replace(seed, crc=crc).body())
    items = seed.encoded_items()
    items[7] = m.rng.choice((b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00", b"\xff"))  # 2^32, -1
    return m.signed_items(items)


def _s_stale(m: Mutator, seed: Seed) -> bytes:
    j = m.judge
    ts = m.rng.choice(
        (
            j.now_us - j.ttl_us - 1,
            j.now_us - j.ttl_us - m.rng.randrange(1, 10**12),
            j.not_before_us - 1,
            0,
        )
    )
    return m.signed(replace(seed, ts_us=max(0, ts)).body())


def _s_future(m: Mutator, seed: Seed) -> bytes:
    j = m.judge
    ts = m.rng.choice((j.now_us + j.skew_us + 1, j.now_us + 10**12, UINT64))
    return m.signed(replace(seed, ts_us=ts).body())


def _s_replay(m: Mutator, seed: Seed) -> bytes:
    known = [(s, t) for (s, t) in m.judge.last_seq if t == bool(seed.flags & TELEMETRY)]
    if not known:
        return _s_bitflip(m, seed)
    source = m.rng.choice(known)[0]
    last = m.judge.last_seq[(source, bool(seed.flags & TELEMETRY))]
    seq = m.rng.choice((last, last - 1, 0, max(0, last - m.rng.randrange(1, 10**6))))
    return m.signed(replace(seed, source=source, seq=max(0, seq)).body())


def _s_wrong_dest(m: Mutator, seed: Seed) -> bytes:
    dest = m.rng.choice(("gateway-2", m.judge.gateway_id.upper(), m.judge.gateway_id + "."))
    return m.signed(replace(seed, dest=dest).body())


def _s_aead(m: Mutator, seed: Seed) -> bytes:
    """Encrypted payloads that do not open: bad tag, other nonce, other key, clear text."""
    if not seed.flags & ENCRYPTED:
        seed = make_seed(m.secret, seed.data + b"\x00" * 16, packet_id=seed.id,
                         flags=seed.flags | ENCRYPTED, source=seed.source, dest=seed.dest,
                         seq=seed.seq, ts_us=seed.ts_us)  # fmt: skip
    choice = m.rng.randrange(5)
    if choice == 0:  # the Poly1305 tag
        data = seed.data[:-16] + m.flip_bits(seed.data[-16:], 3)
        return m.signed(with_fields(seed, data=data).body())
    if choice == 1:  # the ciphertext
        data = m.flip_bits(seed.data[:-16], 3) + seed.data[-16:]
        return m.signed(with_fields(seed, data=data).body())
    if choice == 2:  # the nonce (id[:12]; id[12:] is not part of it)
        new_id = m.flip_bits(seed.id[:12], 2) + seed.id[12:]
        return m.signed(with_fields(seed, id=new_id).body())
    if choice == 3:  # another payload key
        data = Secret(m.rng.randbytes(32)).seal(seed.id, seed.data[:-16])
        return m.signed(with_fields(seed, data=data).body())
    return m.signed(with_fields(seed, data=seed.data[:-16] + bytes(16)).body())


def _s_bad_source(m: Mutator, seed: Seed) -> bytes:
    source = m.rng.choice(("", " ", "a" * 65, "collector\x00", "collec$tor", "..\\x", "ü"))
    return m.signed(replace(seed, source=source).body())


KINDS: Final[dict[str, Kind]] = {
    "bitflip": _bitflip,
    "byteset": _byteset,
    "truncate": _truncate,
    "extend": _extend,
    "oversize": _oversize,
    "splice": _splice,
    "forged_tag": _forged_tag,
    "frame_shape": _frame_shape,
    "frame_headers": _frame_headers,
    "frame_nesting": _frame_nesting,
    "s_bitflip": _s_bitflip,
    "s_truncate": _s_truncate,
    "s_extend": _s_extend,
    "s_type_swap": _s_type_swap,
    "s_wrong_length": _s_wrong_length,
    "s_huge_header": _s_huge_header,
    "s_nesting": _s_nesting,
    "s_map_body": _s_map_body,
    "s_arity": _s_arity,
    "s_bad_value": _s_bad_value,
    "s_bad_crc": _s_bad_crc,
    "s_stale": _s_stale,
    "s_future": _s_future,
    "s_replay": _s_replay,
    "s_wrong_dest": _s_wrong_dest,
    "s_aead": _s_aead,
    "s_bad_source": _s_bad_source,
}
