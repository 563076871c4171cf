"""The packet verifier: each refusal has its own reason, sequence state, bounded memory."""

from __future__ import annotations

import pytest

from qrng_dd import packet as wire
from qrng_dd.errors import PacketError
from qrng_dd.packet import PacketKey
from qrng_dd.verifier import PacketVerifier

from .conftest import make_packet

START = 1_764_201_600.0
START_US = int(START * 1_000_000)


class Clock:
    """A settable clock."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(key: PacketKey, clock: Clock) -> PacketVerifier:
    return PacketVerifier(key, "gateway", ttl_s=300, skew_s=60, clock=clock)


def _raw(key: PacketKey, **kw: object) -> bytes:
    kw.setdefault("ts_us", START_US)
    return wire.encode(make_packet(**kw), key)  # type: ignore[arg-type]


def _reason(verifier: PacketVerifier, raw: bytes) -> str:
    with pytest.raises(PacketError) as err:
        verifier.verify(raw)
    return err.value.reason


def test_accepts_a_fresh_packet_and_returns_clear_data(key: PacketKey) -> None:
    """A valid encrypted packet is accepted with its plaintext."""
    v = _verifier(key, Clock())
    accepted = v.verify(_raw(key, data=b"entropy!" * 8))
    assert accepted.packet.data == b"entropy!" * 8
    assert v.sources["collector"].last_seq == 1


def test_replay_is_refused(key: PacketKey) -> None:
    """The same packet twice: the second is a replay."""
    v = _verifier(key, Clock())
    raw = _raw(key, seq=5)
    v.verify(raw)
    assert _reason(v, raw) == "replay"
    assert _reason(v, _raw(key, seq=4)) == "replay"


def test_gaps_are_allowed_and_counted(key: PacketKey) -> None:
    """seq 1 then 4: accepted, two missing packets counted."""
    v = _verifier(key, Clock())
    v.verify(_raw(key, seq=1, ts_us=START_US))
    accepted = v.verify(_raw(key, seq=4, ts_us=START_US + 1000))
    assert accepted.gap == 2
    assert v.sources["collector"].gaps == 2


def test_collector_restart_is_not_counted_as_loss(key: PacketKey) -> None:
    """A seq jump larger than the time between packets is a restart, not a gap."""
    v = _verifier(key, Clock(START + 10))
    v.verify(_raw(key, seq=START_US + 3, ts_us=START_US + 1_000_000))
    accepted = v.verify(_raw(key, seq=START_US + 5_000_000, ts_us=START_US + 5_000_100))
    assert accepted.gap == 0
    assert v.sources["collector"].restarts == 1


def test_stale_and_future_are_refused(key: PacketKey) -> None:
    """Older than the TTL is stale; beyond now plus skew is future."""
    clock = Clock()
    v = _verifier(key, clock)
    clock.now = START + 1000
    assert _reason(v, _raw(key, ts_us=START_US + 1000 * 10**6 - 301 * 10**6)) == "stale"
    assert _reason(v, _raw(key, ts_us=START_US + 1000 * 10**6 + 61 * 10**6)) == "future"
    v.verify(_raw(key, ts_us=START_US + 1000 * 10**6 + 59 * 10**6))


def test_packets_from_before_the_gateway_started_are_stale(key: PacketKey) -> None:
    """A packet created before start minus skew is refused even inside the TTL."""
    v = _verifier(key, Clock())
    assert _reason(v, _raw(key, ts_us=START_US - 61 * 10**6)) == "stale"
    v.verify(_raw(key, ts_us=START_US - 59 * 10**6))


def test_wrong_destination_is_refused(key: PacketKey) -> None:
    """A packet for another gateway id is wrong_dest."""
    v = _verifier(key, Clock())
    assert _reason(v, _raw(key, dest="gateway-1")) == "wrong_dest"


def test_bad_tag_beats_every_later_check(key: PacketKey) -> None:
    """A forged packet with every other fault too is bad_mac."""
    v = _verifier(key, Clock())
    forged = wire.encode(make_packet(dest="other", ts_us=0), PacketKey(b"\x07" * 32))
    assert _reason(v, forged) == "bad_mac"


def test_decrypt_failure_does_not_advance_the_sequence(key: PacketKey) -> None:
    """A packet that fails decryption leaves the sequence state as it was."""
    import zlib

    import msgpack

    v = _verifier(key, Clock())
    p = make_packet(ts_us=START_US, seq=9)
    junk = b"\x00" * 40
    body = msgpack.packb([p.id, 1, p.source, p.dest, 9, p.ts_us, junk, zlib.crc32(junk)])
    raw = msgpack.packb([1, body, key.tag(body)], use_bin_type=True)
    assert _reason(v, raw) == "decrypt"
    assert "collector" not in v.sources
    v.verify(_raw(key, seq=9))


def test_checks_run_in_the_contract_order(key: PacketKey) -> None:
    """wrong_dest before bad_crc, bad_crc before stale, stale before replay."""
    import zlib

    import msgpack

    v = _verifier(key, Clock())
    v.verify(_raw(key, seq=10))
    p = make_packet(flags=0)

    def signed(dest: str, ts_us: int, crc_ok: bool, seq: int) -> bytes:
        crc = zlib.crc32(p.data) if crc_ok else 0
        body = msgpack.packb([p.id, 0, p.source, dest, seq, ts_us, p.data, crc])
        return msgpack.packb([1, body, key.tag(body)], use_bin_type=True)

    assert _reason(v, signed("other", 0, False, 1)) == "wrong_dest"
    assert _reason(v, signed("gateway", 0, False, 1)) == "bad_crc"
    assert _reason(v, signed("gateway", 0, True, 1)) == "stale"
    assert _reason(v, signed("gateway", START_US, True, 1)) == "replay"


def test_idle_sources_are_forgotten_after_ttl_plus_skew(key: PacketKey) -> None:
    """Memory stays bounded; a replay of the forgotten source's packets is still stale."""
    clock = Clock()
    v = _verifier(key, clock)
    raw = _raw(key, seq=1)
    v.verify(raw)
    clock.now = START + 359
    assert v.forget_idle() == []
    clock.now = START + 361
    assert v.forget_idle() == ["collector"]
    assert _reason(v, raw) == "stale"
