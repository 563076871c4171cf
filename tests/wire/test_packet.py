"""Wire format v1: known answers both ways, round trips, tamper and fuzz properties."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrng_dd.errors import PacketError
from qrng_dd.wire import packet as wire
from qrng_dd.wire.packet import Packet, PacketKey
from qrng_dd.wire.telemetry import decode_telemetry
from tests.conftest import make_packet

VECTORS = json.loads((Path(__file__).parent / "vectors" / "packet-v1.json").read_text())
CASES: list[dict[str, Any]] = VECTORS["cases"]
VECTOR_KEY = PacketKey.from_hex(VECTORS["key_hex"])


def _fields(case: dict[str, Any]) -> Packet:
    f = case["fields"]
    return Packet(
        bytes.fromhex(f["id"]),
        f["flags"],
        f["source"],
        f["dest"],
        f["seq"],
        f["ts_us"],
        bytes.fromhex(f["data_hex"]),
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_encode_reproduces_the_known_answer_bytes(case: dict[str, Any]) -> None:
    """Fields and key give the vector's body, tag and packet byte for byte."""
    raw = wire.encode(_fields(case), VECTOR_KEY)
    assert raw.hex() == case["packet_hex"]
    body, tag = wire.open_frame(raw)
    assert body.hex() == case["body_hex"]
    assert tag.hex() == case["tag_hex"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_decode_recovers_the_known_answer_fields(case: dict[str, Any]) -> None:
    """The vector's packet decodes to its fields, data in clear, CRC of the carried data."""
    packet = wire.decode(bytes.fromhex(case["packet_hex"]), VECTOR_KEY)
    assert packet == _fields(case)
    body = wire.parse_body(wire.open_frame(bytes.fromhex(case["packet_hex"]))[0])
    assert body.data.hex() == case["fields"]["carried_data_hex"]
    assert body.crc == case["fields"]["crc"]


def test_telemetry_vector_carries_a_map() -> None:
    """The telemetry vector's payload is a MessagePack map of statistics."""
    case = next(c for c in CASES if c["name"] == "telemetry")
    packet = wire.decode(bytes.fromhex(case["packet_hex"]), VECTOR_KEY)
    assert packet.telemetry
    assert isinstance(decode_telemetry(packet.data), dict)


def test_telemetry_keeps_only_what_json_can_carry() -> None:
    """bin values, NaN and byte-string keys are dropped, at any depth; the rest is kept."""
    sent = {
        "uptime_seconds": float("nan"),
        "note": b"\x00\xff",
        b"raw-key": 1,
        "health": {"a:1": "healthy", "b:2": b"x", "c:3": [1, float("inf"), "ok", None, True]},
        "data_seq": 7,
    }
    received = decode_telemetry(msgpack.packb(sent, use_bin_type=True))
    assert received == {"health": {"a:1": "healthy", "c:3": [1, "ok", None, True]}, "data_seq": 7}
    json.dumps(received, allow_nan=False)


def test_payload_key_matches_the_vector_file() -> None:
    """HKDF(key, info="qrng-dd/1 payload") is the vector's payload key: encrypt agrees."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    aead = ChaCha20Poly1305(bytes.fromhex(VECTORS["payload_key_hex"]))
    nonce = b"\x00" * 16
    assert VECTOR_KEY.encrypt(nonce, b"abc") == aead.encrypt(nonce[:12], b"abc", None)


packets = st.builds(
    Packet,
    st.binary(min_size=16, max_size=16),
    st.sampled_from([0, 1, 2, 3]),
    st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=1, max_size=2048),
)


@given(packets)
def test_decode_inverts_encode(p: Packet) -> None:
    """decode(encode(p)) == p for any valid packet."""
    assert wire.decode(wire.encode(p, VECTOR_KEY), VECTOR_KEY) == p


@settings(max_examples=200)
@given(packets, st.data())
def test_any_single_bit_flip_is_refused(p: Packet, data: st.DataObject) -> None:
    """Flipping any one bit of an encoded packet gets it refused."""
    raw = bytearray(wire.encode(p, VECTOR_KEY))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PacketError):
        wire.decode(bytes(raw), VECTOR_KEY)


@settings(max_examples=500)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_a_packet_error_and_nothing_else(raw: bytes) -> None:
    """Random input never escapes as anything but PacketError."""
    with pytest.raises(PacketError):
        wire.decode(raw, VECTOR_KEY)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_behind_a_valid_frame_prefix_are_refused(tail: bytes) -> None:
    """Input that starts like a frame is still only ever a PacketError."""
    with pytest.raises(PacketError):
        wire.decode(b"\x93\x01" + tail, VECTOR_KEY)


def test_tag_is_checked_before_the_body_is_parsed(key: PacketKey) -> None:
    """A garbage body under a wrong tag is bad_mac, not malformed: it was never parsed."""
    import msgpack

    raw = msgpack.packb([1, b"\xc1 not msgpack", b"\x00" * 32], use_bin_type=True)
    with pytest.raises(PacketError) as err:
        wire.decode(raw, key)
    assert err.value.reason == "bad_mac"


def test_garbage_body_under_a_valid_tag_is_malformed(key: PacketKey) -> None:
    """Once authenticated, a body that is not the 8-field array is malformed."""
    import msgpack

    body = msgpack.packb([1, 2, 3], use_bin_type=True)
    raw = msgpack.packb([1, body, key.tag(body)], use_bin_type=True)
    with pytest.raises(PacketError) as err:
        wire.decode(raw, key)
    assert err.value.reason == "malformed"


def _body(*fields: bytes) -> bytes:
    """A body from hand-encoded fields: fixarray(8) then the fields as given."""
    return b"\x98" + b"".join(fields)


_ID = b"\xc4\x10" + bytes(range(16))
_DATA = b"\xc4\x03abc"
_CRC = b"\xce" + zlib.crc32(b"abc").to_bytes(4, "big")


def test_wider_encodings_than_needed_are_read_like_the_shortest() -> None:
    """Another encoder may pick bin16, str16, a uint64 or a signed int for a small value: the
    hand-written reader accepts every width MessagePack allows for each field."""
    shortest = wire.parse_body(
        _body(_ID, b"\x00", b"\xa1c", b"\xa1g", b"\x07", b"\x09", _DATA, _CRC)
    )
    widest = wire.parse_body(
        _body(
            b"\xc6\x00\x00\x00\x10" + bytes(range(16)),
            b"\xcf" + bytes(8),
            b"\xdb\x00\x00\x00\x01c",
            b"\xda\x00\x01g",
            b"\xd3" + (7).to_bytes(8, "big"),
            b"\xd0\x09",
            b"\xc5\x00\x03abc",
            _CRC,
        )
    )
    assert widest == shortest
    assert (shortest.source, shortest.seq, shortest.ts_us, shortest.data) == ("c", 7, 9, b"abc")


@pytest.mark.parametrize(
    "body",
    [
        _body(b"\x91" + _ID, b"\x00", b"\xa1c", b"\xa1g", b"\x07", b"\x09", _DATA, _CRC),
        _body(_ID, b"\xff", b"\xa1c", b"\xa1g", b"\x07", b"\x09", _DATA, _CRC),
        _body(_ID, b"\x00", b"\xc4\x01c", b"\xa1g", b"\x07", b"\x09", _DATA, _CRC),
        _body(_ID, b"\x00", b"\xa1c", b"\xa1g", b"\x07", b"\x09", _DATA, _CRC, b"\x00"),
        _body(_ID, b"\x00", b"\xa1c", b"\xa1g", b"\x07", b"\x09", b"\xc4\x09abc", _CRC),
        _body(_ID, b"\x00", b"\xa2\xff\xfe", b"\xa1g", b"\x07", b"\x09", _DATA, _CRC),
        _body(_ID, b"\x00", b"\xd9\x41" + b"c" * 65, b"\xa1g", b"\x07", b"\x09", _DATA, _CRC),
        _body(_ID, b"\x00", b"\xa1c", b"\xa1g", b"\x07", b"\xcf\x00"),
        b"\x97" + _ID,
    ],
    ids=[
        "array-for-id",
        "negative-flags",
        "bin-for-str",
        "extra-byte",
        "short-data",
        "not-utf8",
        "long-id",
        "truncated-int",
        "7-items",
    ],
)
def test_a_body_off_the_contract_is_malformed_at_its_first_wrong_byte(body: bytes) -> None:
    with pytest.raises(PacketError) as err:
        wire.parse_body(body)
    assert err.value.reason == "malformed"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "malformed"),
        (b"\x93\x02", "malformed"),
        (b"\x93\x01\xc4\x01x\xc4\x01y", "malformed"),
        (b"\x00" * (wire.MAX_PACKET_BYTES + 1), "oversize"),
    ],
)
def test_outer_frame_errors_have_their_reason(raw: bytes, reason: str, key: PacketKey) -> None:
    """Empty, wrong version, short tag and oversize frames each get their label."""
    with pytest.raises(PacketError) as err:
        wire.decode(raw, key)
    assert err.value.reason == reason


def test_truncated_packet_is_refused(key: PacketKey) -> None:
    """A packet cut short anywhere is refused."""
    raw = wire.encode(make_packet(), key)
    for cut in (1, 10, len(raw) // 2, len(raw) - 1):
        with pytest.raises(PacketError):
            wire.decode(raw[:cut], key)


def test_wrong_key_is_bad_mac(key: PacketKey) -> None:
    """A packet signed under another key is refused as bad_mac."""
    other = PacketKey(b"\xff" * 32)
    with pytest.raises(PacketError) as err:
        wire.decode(wire.encode(make_packet(), other), key)
    assert err.value.reason == "bad_mac"


def test_bad_crc_is_refused_with_its_reason(key: PacketKey) -> None:
    """A correctly signed body whose CRC is wrong is bad_crc."""
    import msgpack

    p = make_packet(flags=0)
    body = msgpack.packb([p.id, 0, p.source, p.dest, p.seq, p.ts_us, p.data, 12345])
    raw = msgpack.packb([1, body, key.tag(body)], use_bin_type=True)
    with pytest.raises(PacketError) as err:
        wire.decode(raw, key)
    assert err.value.reason == "bad_crc"


def test_unknown_flag_is_malformed(key: PacketKey) -> None:
    """A signed body with an undefined flag bit is malformed."""
    import zlib

    import msgpack

    p = make_packet(flags=0)
    body = msgpack.packb([p.id, 4, p.source, p.dest, p.seq, p.ts_us, p.data, zlib.crc32(p.data)])
    raw = msgpack.packb([1, body, key.tag(body)], use_bin_type=True)
    with pytest.raises(PacketError) as err:
        wire.decode(raw, key)
    assert err.value.reason == "malformed"


def test_encode_refuses_out_of_range_fields(key: PacketKey) -> None:
    """The collector cannot build an illegal packet: empty data, bad id, huge seq."""
    for bad in (
        make_packet(b""),
        make_packet(source="no spaces"),
        make_packet(seq=2**64),
        make_packet(b"x" * (wire.MAX_DATA_BYTES + 1), flags=0),
    ):
        with pytest.raises(ValueError, match=r"\w"):
            wire.encode(bad, key)


def test_short_keys_are_refused() -> None:
    """An HMAC key under 32 bytes cannot be used."""
    with pytest.raises(ValueError, match="at least 32"):
        PacketKey(b"\x00" * 31)


def test_key_repr_hides_the_secret(key: PacketKey) -> None:
    """repr(key) never shows key material."""
    assert "00010203" not in repr(key)
