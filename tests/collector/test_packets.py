"""Packets per target: sequences from the start time, separate data and telemetry streams."""

from __future__ import annotations

import itertools
import uuid

from qrng_dd.collector.packets import PacketBuilder, uuid4_bytes
from qrng_dd.wire import packet as wire
from qrng_dd.wire.telemetry import Telemetry, decode_telemetry
from tests.collector.fakes import FakeClock

START = 1_764_201_600.25  # a wall-clock time in seconds
START_US = 1_764_201_600_250_000


def _builder(clock: FakeClock, key: wire.PacketKey, *, encrypt: bool = True) -> PacketBuilder:
    ids = (bytes([i]) * 16 for i in itertools.count(1))
    return PacketBuilder(
        key, "col-1", ["g0", "g1"], encrypt=encrypt, clock=clock, new_id=lambda: next(ids)
    )


def _telemetry(data_seq: int) -> Telemetry:
    return Telemetry(
        collector_id="col-1", uptime_seconds=0.0, mixing="xor", min_sources=1,
        sources_configured=1, sources_contributing=1, output_paused=False, paused_reason="",
        health={"a": "healthy"}, fetch_errors={"a": 0}, fetched_bytes={"a": 0},
        mixed_bytes={"a": 0}, discarded_bytes={"a": 0}, health_failures={"a": 0},
        pushed_bytes=0, data_seq=data_seq, dropped_bytes={}, buffered_bytes=0,
    )  # fmt: skip


def test_each_target_counts_its_own_seq_up_from_the_start_time(key: wire.PacketKey) -> None:
    """The first packet to each target is start-in-µs + 1; each target counts alone."""
    packets = _builder(FakeClock(START), key)
    assert packets.seq_start == START_US
    sent = [packets.data(g, b"x") for g in ("g0", "g0", "g1", "g0")]
    assert [p.seq for p in sent] == [START_US + 1, START_US + 2, START_US + 1, START_US + 3]
    assert [wire.decode(p.raw, key).seq for p in sent] == [p.seq for p in sent]
    assert [wire.decode(p.raw, key).dest for p in sent] == ["g0", "g0", "g1", "g0"]


def test_heartbeats_have_a_sequence_of_their_own(key: wire.PacketKey) -> None:
    """Telemetry neither takes a data seq nor waits for one: two streams per target."""
    packets = _builder(FakeClock(START), key)
    packets.data("g0", b"x")
    packets.data("g0", b"x")
    heartbeat = wire.decode(packets.telemetry("g0", _telemetry(0)), key)
    assert heartbeat.seq == START_US + 1
    assert heartbeat.telemetry
    assert decode_telemetry(heartbeat.data) == _telemetry(0)
    assert packets.data("g0", b"x").seq == START_US + 3


def test_packets_carry_the_clock_time_the_id_and_the_payload(key: wire.PacketKey) -> None:
    """ts_us is read from the injected clock when the packet is built; ids come one each."""
    clock = FakeClock(START)
    packets = _builder(clock, key)
    clock.now += 2.5
    first = wire.decode(packets.data("g1", b"entropy").raw, key)
    second = wire.decode(packets.data("g1", b"more").raw, key)
    assert first.ts_us == START_US + 2_500_000
    assert (first.id, second.id) == (b"\x01" * 16, b"\x02" * 16)
    assert (first.source, first.data, first.flags) == ("col-1", b"entropy", wire.FLAG_ENCRYPTED)
    assert packets.uptime() == 2.5


def test_unencrypted_packets_carry_no_encryption_flag(key: wire.PacketKey) -> None:
    """QRNG_ENCRYPT_PAYLOAD=false: data in clear, telemetry flagged as telemetry only."""
    packets = _builder(FakeClock(START), key, encrypt=False)
    assert wire.decode(packets.data("g0", b"x").raw, key).flags == 0
    heartbeat = wire.decode(packets.telemetry("g0", _telemetry(0)), key)
    assert heartbeat.flags == wire.FLAG_TELEMETRY


def test_the_settled_seq_is_what_the_last_settled_packet_was(key: wire.PacketKey) -> None:
    """Nothing settled is 0; settle() records the seq per target, for the heartbeats."""
    packets = _builder(FakeClock(START), key)
    outgoing = packets.data("g0", b"x")
    assert packets.settled("g0") == 0
    packets.settle("g0", outgoing.seq)
    assert (packets.settled("g0"), packets.settled("g1")) == (START_US + 1, 0)


def test_packet_ids_are_random_version_4_uuids() -> None:
    """uuid4_bytes() sets the version and variant bits and nothing else is fixed."""
    ids = [uuid.UUID(bytes=uuid4_bytes()) for _ in range(64)]
    assert {u.version for u in ids} == {4}
    assert {u.variant for u in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == 64
