"""The collector in process: sources, mixing, and the Collector wired to fake appliances and
gateways through httpx.MockTransport (the pure core has its own test modules)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import numpy as np
import pytest

from qrng_dd.collector.health import SourceState
from qrng_dd.collector.mixing import mix
from qrng_dd.collector.service import Collector
from qrng_dd.collector.sources import FileSource, QuantisSource, SourceError
from qrng_dd.config import CollectorSettings, load
from qrng_dd.wire import packet as wire
from qrng_dd.wire.telemetry import decode_telemetry, encode_telemetry

HMAC = "cd" * 32


def _settings(**extra: str) -> CollectorSettings:
    env = {
        "QRNG_HMAC_SECRET_KEY": HMAC,
        "QRNG_APPLIANCE_URLS": "http://a.test:8443,http://b.test:8443",
        "QRNG_GATEWAY_PUSH_URL": "http://gw.test/push",
        "QRNG_FETCH_SIZE": "4096",
    }
    env.update(extra)
    return load(CollectorSettings, env)


def _appliances(behaviour: dict[str, str]) -> httpx.AsyncClient:
    """A fake pair of appliances: each host answers good bytes, stuck bytes or errors."""

    def handler(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["size"])
        mode = behaviour.get(request.url.host, "good")
        if mode == "good":
            return httpx.Response(200, content=os.urandom(size),
                                  headers={"content-type": "application/octet-stream"})  # fmt: skip
        if mode == "stuck":
            return httpx.Response(200, content=b"\xa5" * size,
                                  headers={"content-type": "application/octet-stream"})  # fmt: skip
        return httpx.Response(500, text="<html>boom</html>", headers={"content-type": "text/html"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.anyio
async def test_quantis_source_accepts_raw_bytes_and_json_arrays() -> None:
    """Both answer shapes of the appliance API give exactly the bytes asked for."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/2.0/streambytes"
        n = int(request.url.params["size"])
        if request.url.host == "json.test":
            return httpx.Response(200, json=list(range(n)))
        return httpx.Response(
            200, content=bytes(n), headers={"content-type": "application/octet-stream"}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        assert await QuantisSource("http://raw.test", client).fetch(8) == bytes(8)
        assert await QuantisSource("https://json.test/", client).fetch(4) == bytes([0, 1, 2, 3])


@pytest.mark.anyio
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>error</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, content=b"short", headers={"content-type": "application/octet-stream"}),
        httpx.Response(503, content=b"x" * 16),
        httpx.Response(200, json=[1, 2, 300, 4]),
        httpx.Response(200, json={"not": "bytes"}),
        httpx.Response(200, content=b"[1,2", headers={"content-type": "application/json"}),
    ],
)
async def test_quantis_source_refuses_anything_but_exact_bytes(response: httpx.Response) -> None:
    """HTML pages, short answers, errors and bad JSON are errors, never entropy."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: response)) as client:
        with pytest.raises(SourceError):
            await QuantisSource("http://a.test", client).fetch(4)


@pytest.mark.anyio
async def test_quantis_source_reports_connection_errors() -> None:
    """An unreachable appliance is a SourceError naming it."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(SourceError, match=r"a\.test"):
            await QuantisSource("http://a.test", client).fetch(4)


@pytest.mark.anyio
async def test_file_source_reads_exactly_and_refuses_short_files(tmp_path: Path) -> None:
    """A device or file gives n bytes, or an error when it has fewer."""
    f = tmp_path / "rng"
    f.write_bytes(b"0123456789")
    assert await FileSource(f.as_uri()).fetch(4) == b"0123"
    with pytest.raises(SourceError, match="short read"):
        await FileSource(f.as_uri()).fetch(11)
    with pytest.raises(SourceError):
        await FileSource((tmp_path / "missing").as_uri()).fetch(1)


def test_xor_mixing_is_bytewise_and_truncates_to_the_shortest() -> None:
    """XOR of two batches; one batch passes through unchanged."""
    a, b = os.urandom(64), os.urandom(80)
    expected = bytes(x ^ y for x, y in zip(a, b, strict=False))
    assert mix([a, b], "xor") == expected
    assert mix([a], "xor") == a
    assert mix([], "xor") == b""


def test_hkdf_mixing_gives_one_block_out_per_block_in() -> None:
    """HKDF output has each source's length (in whole blocks) and depends on every source."""
    a, b = os.urandom(96), os.urandom(96)
    out = mix([a, b], "hkdf")
    assert len(out) == 96
    assert out != mix([a, os.urandom(96)], "hkdf")
    with pytest.raises(ValueError, match="unknown"):
        mix([a], "and")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_stuck_appliance_is_quarantined_and_never_mixed() -> None:
    """With one stuck and one good source, output is the good source's bytes only, one round
    late: each batch is held back until the source's next batch has passed too."""
    seen: dict[str, list[bytes]] = {"a.test": [], "b.test": []}

    def handler(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["size"])
        data = b"\xa5" * size if request.url.host == "b.test" else os.urandom(size)
        seen[request.url.host].append(data)
        return httpx.Response(
            200, content=data, headers={"content-type": "application/octet-stream"}
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with Collector(_settings(), appliance_client=client) as collector:
        outputs = [await collector.fetch_round() for _ in range(3)]
    good, stuck = collector.schedule.slots
    assert stuck.monitor.state is SourceState.QUARANTINED
    assert good.monitor.state is SourceState.HEALTHY
    # The first round only holds; then each round releases the good source's previous batch.
    assert outputs[0] == b""
    assert outputs[1:] == seen["a.test"][:2]
    assert collector.schedule.contributing == 1
    telemetry = collector.telemetry("gateway")
    assert telemetry["mixed_bytes"] == {"a.test:8443": 2 * 4096, "b.test:8443": 0}
    assert telemetry["discarded_bytes"]["b.test:8443"] == 4096
    assert telemetry["health"] == {"a.test:8443": "healthy", "b.test:8443": "quarantined"}
    assert client.is_closed


@pytest.mark.anyio
async def test_a_fault_that_starts_inside_a_batch_costs_the_batch_held_before_it() -> None:
    """Healthy, healthy, healthy with a biased tail too short to see, then biased: only the
    first two batches are output. The third passed its tests, but was still held when the
    fourth failed, so it went with it (P5: zero bytes of the faulty stretch pooled)."""
    rng = np.random.default_rng(5)
    served: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["size"])
        good = rng.bytes(size)
        mask = np.packbits(rng.random((size, 8)) < 0.2, axis=1).ravel()
        bad = (np.frombuffer(rng.bytes(size), dtype=np.uint8) | mask).tobytes()
        data = [good, good, good[:-256] + bad[-256:], bad][len(served)]
        served.append(data)
        return httpx.Response(200, content=data,
                              headers={"content-type": "application/octet-stream"})  # fmt: skip

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    settings = _settings(QRNG_APPLIANCE_URLS="http://a.test:8443")
    async with Collector(settings, appliance_client=client) as collector:
        outputs = [await collector.fetch_round() for _ in range(4)]
    assert outputs == [b"", served[0], served[1], b""]
    (slot,) = collector.schedule.slots
    assert slot.monitor.state is SourceState.QUARANTINED
    assert (slot.mixed_bytes, slot.discarded_bytes) == (2 * 4096, 2 * 4096)


@pytest.mark.anyio
async def test_too_few_healthy_sources_pause_the_output_and_say_so() -> None:
    """QRNG_MIN_SOURCES=2 with one failing source: no output, and the reason is reported."""
    settings = _settings(QRNG_MIN_SOURCES="2")
    async with Collector(settings, appliance_client=_appliances({"b.test": "error"})) as collector:
        for _ in range(3):
            assert await collector.fetch_round() == b""
    telemetry = collector.telemetry("gateway")
    assert telemetry["output_paused"] is True
    assert "1 of 2 sources healthy" in telemetry["paused_reason"]
    assert telemetry["fetch_errors"]["b.test:8443"] >= 1


@pytest.mark.anyio
async def test_split_fan_out_gives_each_gateway_different_bytes() -> None:
    """Each mixed batch goes whole to one outbox; no byte is queued twice."""
    settings = _settings(QRNG_GATEWAY_PUSH_URL="g0=http://g0.test/push,g1=http://g1.test/push")
    async with Collector(settings, appliance_client=_appliances({})) as collector:
        for _ in range(6):
            collector.distribute(await collector.fetch_round())
    boxes = [box.take(len(box)) for box in collector.outboxes.boxes.values()]
    # Five outputs (the first round only holds), taking turns: three to one, two to the other.
    assert sorted(len(box) for box in boxes) == [2 * 4096, 3 * 4096]
    blocks = [{box[i : i + 16] for i in range(0, len(box), 16)} for box in boxes]
    assert not blocks[0] & blocks[1]


@pytest.mark.anyio
async def test_output_that_fits_no_outbox_is_dropped_and_counted() -> None:
    """With the buffer full, a new batch is dropped whole, counted as buffer_full."""
    settings = _settings(QRNG_COLLECTOR_BUFFER_SIZE="5000")
    async with Collector(settings) as collector:
        collector.distribute(os.urandom(4096))
        collector.distribute(os.urandom(4096))
    assert len(collector.outboxes["gateway"]) == 4096
    assert collector.dropped["buffer_full"] == 4096
    assert collector.telemetry("gateway")["dropped_bytes"]["buffer_full"] == 4096


def _gateway(statuses: list[int]) -> tuple[httpx.AsyncClient, list[bytes]]:
    """A fake gateway answering the given data statuses in turn, recording every data body."""
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if _is_telemetry(request.content):
            return httpx.Response(200, json={})
        bodies.append(request.content)
        code = statuses[min(len(bodies) - 1, len(statuses) - 1)]
        return httpx.Response(code, json={"detail": "x"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), bodies


def _is_telemetry(raw: bytes) -> bool:
    return bool(wire.parse_body(wire.open_frame(raw)[0]).flags & wire.FLAG_TELEMETRY)


async def _push_once(statuses: list[int]) -> tuple[Collector, list[bytes]]:
    """Queue 1000 bytes for the one gateway and push them until the sender is done."""
    client, bodies = _gateway(statuses)
    async with Collector(_settings(), push_client=client) as collector:
        collector.distribute(os.urandom(1000))
        fetched, done = anyio.Event(), anyio.Event()
        fetched.set()  # send what is queued, then return
        with anyio.fail_after(10):
            await collector.push(collector.targets[0], fetched, done)
    return collector, bodies


@pytest.mark.anyio
async def test_a_replay_answer_counts_as_delivered_and_is_not_resent() -> None:
    """409 means an earlier attempt got through: delivered once, not pushed again."""
    collector, bodies = await _push_once([409])
    assert len(bodies) == 1
    assert collector.pushed["gateway"] == 1000
    assert collector.telemetry("gateway")["data_seq"] == collector.packets.seq_start + 1


@pytest.mark.anyio
async def test_a_refused_packet_is_dropped_and_counted_not_resent() -> None:
    """A 401 (wrong key) drops the packet: its bytes never go out under a new seq."""
    collector, bodies = await _push_once([401])
    assert len(bodies) == 1
    assert collector.pushed["gateway"] == 0
    assert collector.dropped["refused"] == 1000
    # Settled all the same: the gateway may count it as lost.
    assert collector.telemetry("gateway")["data_seq"] == collector.packets.seq_start + 1


@pytest.mark.anyio
async def test_a_retry_resends_the_identical_packet() -> None:
    """After 503 and 507, the same bytes go out under the same seq and id."""
    collector, bodies = await _push_once([503, 507, 200])
    assert len(bodies) == 3
    assert bodies[0] == bodies[1] == bodies[2]
    assert collector.pushed["gateway"] == 1000


@pytest.mark.anyio
async def test_telemetry_carries_no_entropy_and_no_secret() -> None:
    """Telemetry is counters and states: no key material, and it survives the wire intact."""
    async with Collector(_settings()) as collector:
        telemetry = collector.telemetry("gateway")
    encoded = encode_telemetry(telemetry)
    assert HMAC.encode() not in encoded
    assert bytes.fromhex(HMAC) not in encoded
    assert decode_telemetry(encoded) == telemetry
    assert telemetry["sources_configured"] == 2
    assert telemetry["output_paused"] is True
    assert telemetry["paused_reason"] == "starting"


@pytest.mark.anyio
async def test_the_final_flush_sends_the_bytes_of_the_round_in_flight_at_stop() -> None:
    """SIGTERM during a fetch: that round's output is still pushed, nothing expires.

    Round 3's fetch releases round 2's batch (each is held until the next one passes), so
    two rounds' worth go out; the third batch, with nothing after it to vouch, never does.
    """
    stop = anyio.Event()
    rounds = 0

    async def appliance(request: httpx.Request) -> httpx.Response:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            stop.set()  # the signal arrives while this fetch is in flight ...
            for _ in range(5):  # ... and the senders get to run before it completes
                await anyio.lowlevel.checkpoint()
        size = int(request.url.params["size"])
        return httpx.Response(200, content=os.urandom(size),
                              headers={"content-type": "application/octet-stream"})  # fmt: skip

    pushed: list[bytes] = []
    heartbeats: list[dict[str, object]] = []
    key = _settings().packet_key()

    def gateway(request: httpx.Request) -> httpx.Response:
        if _is_telemetry(request.content):
            heartbeats.append(decode_telemetry(wire.decode(request.content, key).data))
        else:
            pushed.append(request.content)
        return httpx.Response(200, json={})

    collector = Collector(
        _settings(QRNG_APPLIANCE_URLS="http://a.test:8443", QRNG_FETCH_INTERVAL_MS="1"),
        appliance_client=httpx.AsyncClient(transport=httpx.MockTransport(appliance)),
        push_client=httpx.AsyncClient(transport=httpx.MockTransport(gateway)),
    )
    with anyio.fail_after(20):
        async with collector:
            await collector.run(stop)
    assert rounds == 3
    assert collector.pushed["gateway"] == 2 * 4096
    assert collector.dropped == {"buffer_full": 0, "refused": 0, "expired": 0}
    # Each push was one new packet (no resend), and heartbeats kept their own stream.
    assert len({wire.decode(raw, key).seq for raw in pushed}) == len(pushed) >= 1
    assert heartbeats[0]["collector_id"] == "collector"


@pytest.mark.anyio
async def test_run_needs_the_collector_entered_first() -> None:
    """run() outside ``async with`` says how to use it instead of failing halfway."""
    collector = Collector(_settings())
    with pytest.raises(RuntimeError, match="async with"):
        await collector.run(anyio.Event())
    async with collector:  # closes the clients it made
        pass


@pytest.mark.anyio
async def test_leaving_the_collector_closes_the_clients_it_was_given() -> None:
    """The collector owns its clients, injected or not: both are closed on exit."""
    appliances, gateways = _appliances({}), _gateway([200])[0]
    async with Collector(_settings(), appliance_client=appliances, push_client=gateways):
        assert not appliances.is_closed
    assert appliances.is_closed
    assert gateways.is_closed


@pytest.mark.anyio
async def test_the_health_tests_use_the_configured_false_alarm_rate() -> None:
    """QRNG_HEALTH_ALPHA_LOG2=20 gives the SP 800-90B table's cutoffs for H = 8: 4 and 13."""
    settings = _settings(QRNG_HEALTH_ALPHA_LOG2="20", QRNG_CLAIMED_ENTROPY_BITS="8")
    async with Collector(settings) as collector:
        monitor = collector.schedule.slots[0].monitor
    assert (monitor.rct_cutoff, monitor.apt_cutoff) == (4, 13)
    async with Collector(_settings(QRNG_CLAIMED_ENTROPY_BITS="8")) as collector:
        default = collector.schedule.slots[0].monitor
    assert (default.rct_cutoff, default.apt_cutoff) == (6, 19)
