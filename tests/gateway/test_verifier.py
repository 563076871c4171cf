"""The packet verifier: each refusal has its own reason, sequence state, bounded memory."""

from __future__ import annotations

import pytest

from qrng_dd.errors import PacketError
from qrng_dd.gateway.verifier import PacketVerifier, SourceMark
from qrng_dd.wire import packet as wire
from qrng_dd.wire.packet import PacketKey
from tests.conftest import make_packet

START = 1_764_201_600.0
START_US = int(START * 1_000_000)


class Clock:
    """A settable clock."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(
    key: PacketKey, clock: Clock, marks: dict[str, SourceMark] | None = None
) -> PacketVerifier:
    """A verifier with a sequence memory (empty unless ``marks``), as with QRNG_STATE_DIR."""
    return PacketVerifier(
        key, "gateway", ttl_s=300, skew_s=60, clock=clock, marks={} if marks is None else marks
    )


def _forgetful(key: PacketKey, clock: Clock) -> PacketVerifier:
    """A verifier with no memory of an earlier run (no QRNG_STATE_DIR)."""
    return PacketVerifier(key, "gateway", ttl_s=300, skew_s=60, clock=clock, marks=None)


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


def test_without_memory_anything_that_may_predate_the_start_is_stale(key: PacketKey) -> None:
    """No state: ts below start + skew is refused, whatever side the collector's clock is on.

    A collector 30 s ahead stamps a packet made 1 s before the start with START + 29 s: still
    refused. One 30 s behind is refused until its clock passes START + skew.
    """
    clock = Clock()
    v = _forgetful(key, clock)
    assert not v.remembers
    assert v.quiet_until == START + 60
    for created in (-61, -1, 0, 29, 59.9):
        assert _reason(v, _raw(key, ts_us=START_US + int(created * 10**6))) == "stale"
    clock.now = START + 60
    v.verify(_raw(key, ts_us=START_US + 60 * 10**6))


def test_with_memory_packets_are_judged_by_sequence_alone(key: PacketKey) -> None:
    """Restored marks: no quiet start; a replay of what the last run accepted is refused."""
    marks = {"collector": SourceMark(seq=100, ts_us=START_US - 10**6, telemetry_seq=7)}
    v = _verifier(key, Clock(), marks)
    assert v.remembers
    assert v.quiet_until < START
    assert _reason(v, _raw(key, seq=100, ts_us=START_US - 10**6)) == "replay"
    assert _reason(v, _raw(key, seq=7, flags=3, ts_us=START_US - 10**6)) == "replay"
    accepted = v.verify(_raw(key, seq=103, ts_us=START_US - 10**6 + 500))
    assert accepted.gap == 2  # what was sent while the gateway was down is counted
    assert v.marks()["collector"].seq == 103


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
        raw: bytes = msgpack.packb([1, body, key.tag(body)], use_bin_type=True)
        return raw

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


def test_telemetry_has_its_own_sequence(key: PacketKey) -> None:
    """A heartbeat may overtake a data packet that waits for room: neither is a replay."""
    v = _verifier(key, Clock())
    waiting = _raw(key, seq=10)  # data, refused 507 for now: checked, never accepted
    v.check(waiting)
    v.verify(_raw(key, seq=11, flags=3))  # heartbeat, its own stream
    v.verify(waiting)  # the data packet's retry still goes in
    assert _reason(v, _raw(key, seq=11, flags=3)) == "replay"
    assert _reason(v, waiting) == "replay"
    state = v.sources["collector"]
    assert (state.last_seq, state.telemetry and state.telemetry.seq) == (10, 11)


def test_check_records_nothing_and_accept_rechecks(key: PacketKey) -> None:
    """Two checked copies of one packet: only the first accept wins."""
    v = _verifier(key, Clock())
    raw = _raw(key, seq=5)
    first, second = v.check(raw), v.check(raw)
    assert "collector" not in v.sources
    v.accept(first)
    with pytest.raises(PacketError) as err:
        v.accept(second)
    assert err.value.reason == "replay"


def test_a_heartbeat_counts_tail_loss_and_late_arrivals_are_not_counted_twice(
    key: PacketKey,
) -> None:
    """Data 1..3 arrive, 4..6 are lost at the tail: the heartbeat saying 6 counts 3 lost."""
    v = _verifier(key, Clock())
    for seq in (1, 2, 3):
        v.verify(_raw(key, seq=seq, ts_us=START_US + seq))
    assert v.note_sent("collector", 6) == 3
    assert v.note_sent("collector", 6) == 0  # said again: nothing new
    late = v.verify(_raw(key, seq=5, ts_us=START_US + 5))  # reordered, not lost after all
    assert late.gap == 0
    after = v.verify(_raw(key, seq=8, ts_us=START_US + 300))
    assert after.gap == 1  # only 7 is new loss
    state = v.sources["collector"]
    assert (state.gaps, state.late) == (4, 1)


def test_a_heartbeat_after_a_collector_restart_is_not_loss(key: PacketKey) -> None:
    """A heartbeat from a restarted collector names a seq millions above: a restart."""
    v = _verifier(key, Clock())
    v.verify(_raw(key, seq=START_US - 10**7, ts_us=START_US - 10**7))
    assert v.note_sent("collector", START_US + 10**7) == 0
    assert v.sources["collector"].restarts == 1


def test_a_collector_killed_soon_after_its_start_is_one_restart(key: PacketKey) -> None:
    """Life A starts at T and sends 1 s later; life B starts at T + 2 s and sends 1.5 s
    after its start: the 2-million jump in seq is a restart, not 2 million lost packets."""
    v = _verifier(key, Clock())
    start_a = START_US - 10_000_000
    start_b = start_a + 2_000_000
    v.verify(_raw(key, seq=start_a + 1, ts_us=start_a + 1_000_000))
    assert v.verify(_raw(key, seq=start_b + 1, ts_us=start_b + 1_500_000)).gap == 0
    state = v.sources["collector"]
    assert (state.restarts, state.gaps) == (1, 0)


def test_a_gap_within_one_life_is_counted_however_large(key: PacketKey) -> None:
    """100,000 packets lost between two of one life (seq still below the last timestamp)."""
    v = _verifier(key, Clock())
    start = START_US - 10_000_000
    v.verify(_raw(key, seq=start + 1, ts_us=start + 1_000_000))
    assert v.verify(_raw(key, seq=start + 100_002, ts_us=start + 1_100_000)).gap == 100_000
    assert v.sources["collector"].restarts == 0
