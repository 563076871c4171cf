"""Tests for the simulator's app (`qrng_dd.simulator.app`): the Quantis API and the controls."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from qrng_dd.simulator.app import MAX_QUANTITY, MAX_STREAM_BYTES, REPEAT_HISTORY_BYTES, create_app
from qrng_dd.simulator.faults import MAX_LATENCY_MS, Faults

BASE = "http://appliance.test"


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def _get(faults: Faults, path: str, **params: Any) -> httpx.Response:
    async with _client(create_app(faults)) as client:
        return await client.get(path, params=params)


def _one_fraction(data: bytes) -> float:
    return float(np.unpackbits(np.frombuffer(data, dtype=np.uint8)).mean())


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the simulator's sleeps instead of sleeping, so delays are checked as numbers."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    # The simulator calls anyio.sleep at run time, so patching the module attribute reaches it.
    monkeypatch.setattr(anyio, "sleep", fake_sleep)
    return recorded


@pytest.mark.anyio
@pytest.mark.parametrize("size", [1, 4096, 65537, MAX_STREAM_BYTES])
async def test_streambytes_returns_exactly_the_requested_size(size: int) -> None:
    """streambytes answers exactly `size` raw bytes as application/octet-stream."""
    response = await _get(Faults(), "/api/2.0/streambytes", size=size)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert len(response.content) == size


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"size": ""},
        {"size": "0"},
        {"size": "-1"},
        {"size": "abc"},
        {"size": "1.5"},
        {"size": " 5"},
        {"size": "1_000"},
        {"size": str(MAX_STREAM_BYTES + 1)},
        {"size": "9" * 40},
    ],
)
async def test_bad_sizes_are_answered_400_with_json(params: dict[str, str]) -> None:
    """A missing, negative, malformed or huge size is a 400 with a JSON body, never a 500."""
    response = await _get(Faults(), "/api/2.0/streambytes", **params)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert "size" in response.json()["detail"]


@pytest.mark.anyio
async def test_int_values_stay_in_range_and_cover_it() -> None:
    """int returns `quantity` values within [min, max], every value of a small range seen."""
    response = await _get(Faults(), "/api/2.0/int", min=-5, max=5, quantity=2000)
    values = response.json()
    assert response.status_code == 200
    assert len(values) == 2000
    assert set(values) == set(range(-5, 6))


@pytest.mark.anyio
async def test_int_accepts_the_full_32_bit_range() -> None:
    """A full-range request (span 2**32) works instead of crashing on overflow."""
    response = await _get(Faults(), "/api/2.0/int", min=-(2**31), max=2**31 - 1, quantity=1000)
    values = response.json()
    assert response.status_code == 200
    assert all(-(2**31) <= v < 2**31 for v in values)
    assert min(values) < 0 < max(values)


@pytest.mark.anyio
async def test_int_with_min_equal_max_returns_that_value() -> None:
    """A one-value range is allowed for integers and returns only that value."""
    response = await _get(Faults(), "/api/2.0/int", min=7, max=7, quantity=5)
    assert response.json() == [7] * 5


@pytest.mark.anyio
async def test_short_values_stay_in_range() -> None:
    """short returns values within [min, max] of the signed 16-bit range."""
    response = await _get(Faults(), "/api/2.0/short", min=-32768, max=-32760, quantity=500)
    values = response.json()
    assert len(values) == 500
    assert set(values) == set(range(-32768, -32759))


@pytest.mark.anyio
async def test_integer_defaults_give_one_non_negative_value() -> None:
    """Without parameters, int returns one value in [0, 2**31 - 1]."""
    values = (await _get(Faults(), "/api/2.0/int")).json()
    assert len(values) == 1
    assert 0 <= values[0] < 2**31


@pytest.mark.anyio
async def test_double_values_stay_in_the_half_open_range() -> None:
    """double returns floats in [min, max)."""
    response = await _get(Faults(), "/api/2.0/double", min=2.5, max=3.0, quantity=1000)
    values = response.json()
    assert len(values) == 1000
    assert all(isinstance(v, float) and 2.5 <= v < 3.0 for v in values)


@pytest.mark.anyio
async def test_double_defaults_to_the_unit_interval() -> None:
    """Without min and max, double values are in [0, 1)."""
    values = (await _get(Faults(), "/api/2.0/double", quantity=100)).json()
    assert all(0.0 <= v < 1.0 for v in values)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/2.0/int", {"min": 5, "max": 4}),
        ("/api/2.0/int", {"max": 2**31}),
        ("/api/2.0/int", {"min": -(2**31) - 1}),
        ("/api/2.0/int", {"quantity": 0}),
        ("/api/2.0/int", {"quantity": MAX_QUANTITY + 1}),
        ("/api/2.0/short", {"max": 32768}),
        ("/api/2.0/short", {"min": "x"}),
        ("/api/2.0/double", {"min": 1.0, "max": 1.0}),
        ("/api/2.0/double", {"min": "nan"}),
        ("/api/2.0/double", {"max": "inf"}),
        ("/api/2.0/double", {"max": "1e999"}),
        ("/api/2.0/double", {"min": -1e308, "max": 1e308}),
        ("/api/2.0/double", {"quantity": -1}),
    ],
)
async def test_bad_number_parameters_are_answered_400(path: str, params: dict[str, Any]) -> None:
    """Out-of-range or malformed min, max and quantity are a 400 with a JSON body."""
    response = await _get(Faults(), path, **params)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/2.0/systeminfo", "/api/2.0/firmwareinfo"])
async def test_info_routes_say_plainly_this_is_a_simulator(path: str) -> None:
    """systeminfo and firmwareinfo state simulator, not quantum, bytes from os.urandom."""
    info = (await _get(Faults(), path)).json()
    assert info["simulator"] is True
    assert info["quantum"] is False
    assert "os.urandom" in info["entropy_source"]
    assert "NOT a quantum" in info["notice"]


@pytest.mark.anyio
async def test_stuck_output_is_one_repeated_byte() -> None:
    """With stuck set, every byte of the stream has the same value."""
    response = await _get(Faults(stuck=True), "/api/2.0/streambytes", size=4096)
    assert len(set(response.content)) == 1
    assert len(response.content) == 4096


@pytest.mark.anyio
async def test_stuck_integers_repeat_one_value_or_fail_with_503() -> None:
    """Under stuck, int answers one repeated value, or 503 if that value is always rejected."""
    faults = Faults(stuck=True)
    constant = await _get(faults, "/api/2.0/int", min=0, max=9, quantity=20)
    assert len(set(constant.json())) == 1
    # A stuck short draw is 0xA5A5 = 42405. A span of 40,000 accepts draws below 40,000 only,
    # so the stuck value is rejected every round: the answer must be 503, not a made-up number.
    rejected = await _get(faults, "/api/2.0/short", min=-32768, max=7231, quantity=1)
    assert rejected.status_code == 503
    assert rejected.json()["error"] == "source_failure"


@pytest.mark.anyio
async def test_bias_half_gives_clearly_more_one_bits() -> None:
    """bias=0.5 makes about 75% of 64 KiB worth of bits ones; bias=0 stays near 50%."""
    biased = await _get(Faults(bias=0.5), "/api/2.0/streambytes", size=65536)
    fair = await _get(Faults(), "/api/2.0/streambytes", size=65536)
    assert _one_fraction(biased.content) > 0.7
    assert 0.48 < _one_fraction(fair.content) < 0.52


@pytest.mark.anyio
async def test_error_rate_one_answers_500_with_an_html_page() -> None:
    """error_rate=1 fails every API request with a 500 HTML page, like a dead appliance."""
    faults = Faults(error_rate=1.0)
    for path in ["/api/2.0/streambytes?size=16", "/api/2.0/int", "/api/2.0/systeminfo"]:
        async with _client(create_app(faults)) as client:
            response = await client.get(path)
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("text/html")
        assert "<html>" in response.text


@pytest.mark.anyio
async def test_bad_parameters_are_400_even_under_error_rate_one() -> None:
    """Validation comes before injected faults, so a client bug is never hidden by a 500."""
    response = await _get(Faults(error_rate=1.0), "/api/2.0/streambytes", size=-1)
    assert response.status_code == 400


@pytest.mark.anyio
async def test_control_endpoint_changes_faults_at_runtime() -> None:
    """POST /sim/faults sets the given fields and leaves the rest; GET shows them."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        posted = await client.post("/sim/faults", json={"stuck": True, "latency_ms": 0})
        assert posted.status_code == 200
        assert posted.json()["stuck"] is True
        assert faults.stuck is True
        stream = await client.get("/api/2.0/streambytes", params={"size": 64})
        assert len(set(stream.content)) == 1
        await client.post("/sim/faults", json={"stuck": False, "bias": 0.25, "max_bitrate": 8e6})
        shown = (await client.get("/sim/faults")).json()
    assert shown == {
        "error_rate": 0.0,
        "latency_ms": 0,
        "stuck": False,
        "bias": 0.25,
        "max_bitrate": 8_000_000,
        "repeat": 0.0,
        "drift": 0.0,
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"bias": 1.5},
        {"bias": -0.1},
        {"error_rate": "0.5"},
        {"error_rate": True},
        {"latency_ms": -1},
        {"latency_ms": 1.5},
        {"latency_ms": MAX_LATENCY_MS + 1},
        {"max_bitrate": -8},
        {"stuck": 1},
        {"stuck": True, "colour": "red"},
        {"stuck": True, "bias": 2},
        [1, 2],
        "stuck",
    ],
)
async def test_control_endpoint_rejects_bad_values_and_changes_nothing(body: object) -> None:
    """A bad control request is a 400 and no fault changes, not even the valid ones in it."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        response = await client.post("/sim/faults", json=body)
    assert response.status_code == 400
    assert faults == Faults()


@pytest.mark.anyio
async def test_control_endpoint_with_an_empty_object_changes_nothing() -> None:
    """POST {} is valid and answers the current faults unchanged."""
    faults = Faults(bias=0.1)
    async with _client(create_app(faults)) as client:
        response = await client.post("/sim/faults", json={})
    assert response.status_code == 200
    assert response.json()["bias"] == 0.1
    assert faults == Faults(bias=0.1)


@pytest.mark.anyio
async def test_control_endpoint_rejects_a_body_that_is_not_json() -> None:
    """Non-JSON bytes on the control endpoint are a 400, not a 500."""
    async with _client(create_app(Faults())) as client:
        response = await client.post("/sim/faults", content=b"\xff{not json")
    assert response.status_code == 400


@pytest.mark.anyio
async def test_mutating_faults_in_process_changes_the_running_app() -> None:
    """The app reads the Faults object on each request, so in-process changes apply at once."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        assert (await client.get("/api/2.0/int")).status_code == 200
        faults.error_rate = 1.0
        assert (await client.get("/api/2.0/int")).status_code == 500


async def _stats(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/sim/stats")
    assert response.status_code == 200
    stats: dict[str, int] = response.json()
    return stats


async def _stream(client: httpx.AsyncClient, size: int) -> bytes:
    response = await client.get("/api/2.0/streambytes", params={"size": size})
    assert response.status_code == 200
    assert len(response.content) == size
    return response.content


def _windows(data: bytes, width: int = 16) -> set[bytes]:
    return {data[i : i + width] for i in range(len(data) - width + 1)}


@pytest.mark.anyio
async def test_repeat_one_replays_a_contiguous_slice_of_earlier_output() -> None:
    """repeat=1: once the history covers a draw, every draw is an exact copy of served bytes."""
    faults = Faults(repeat=1.0)
    async with _client(create_app(faults)) as client:
        first = await _stream(client, 4096)  # the history is empty: this draw must be fresh
        replays = [await _stream(client, size) for size in (1024, 16, 4096, 3000)]
        larger = await _stream(client, 8192)  # more than the 4 KiB held: fresh, then remembered
        after = await _stream(client, 5000)
        stats = await _stats(client)
    for replay in replays:
        assert replay in first
    # Only one 4096-byte slice of a 4096-byte history exists.
    assert replays[2] == first
    assert not _windows(larger) & _windows(first)
    assert after in first + larger
    assert stats["repeated_bytes"] == 1024 + 16 + 4096 + 3000 + 5000
    assert stats["served_bytes"] == 4096 + 1024 + 16 + 4096 + 3000 + 8192 + 5000


@pytest.mark.anyio
async def test_replays_are_not_added_to_the_history() -> None:
    """The history holds fresh output only, so replays never crowd out what the source made."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        first = await _stream(client, 4096)
        faults.repeat = 1.0
        for _ in range(5):
            # Had replays been appended, the history would grow past 4096 bytes and a
            # 4096-byte replay could start anywhere but 0.
            assert await _stream(client, 4096) == first


@pytest.mark.anyio
async def test_repeat_history_keeps_exactly_the_last_mebibyte() -> None:
    """The replayable history is the last REPEAT_HISTORY_BYTES served, trimmed from the front."""
    faults = Faults()
    half = REPEAT_HISTORY_BYTES // 2
    async with _client(create_app(faults)) as client:
        chunks = [await _stream(client, half) for _ in range(3)]
        faults.repeat = 1.0
        replay = await _stream(client, REPEAT_HISTORY_BYTES)
    assert replay == chunks[1] + chunks[2]


@pytest.mark.anyio
async def test_repeat_zero_never_replays_earlier_output() -> None:
    """repeat=0: no 16-byte window of a later 4 KiB draw appears in earlier output."""
    async with _client(create_app(Faults())) as client:
        draws = [await _stream(client, 4096) for _ in range(8)]
        stats = await _stats(client)
    seen: set[bytes] = set()
    for draw in draws:
        windows = _windows(draw)
        assert not windows & seen
        seen |= windows
    assert stats["repeated_bytes"] == 0


@pytest.mark.anyio
async def test_drift_raises_the_share_of_one_bits_as_mebibytes_are_served() -> None:
    """drift=0.5/MiB: a fair first draw, then after 1 MiB more, about 78% of bits are ones."""
    faults = Faults(drift=0.5)
    async with _client(create_app(faults)) as client:
        early = await _stream(client, 65536)  # effective bias 0 for the whole first draw
        await _stream(client, 1024 * 1024 - 65536)
        late = await _stream(client, 65536)  # 1 MiB served: effective bias 0.5
    assert 0.48 < _one_fraction(early) < 0.52
    assert _one_fraction(late) > 0.7


@pytest.mark.anyio
async def test_setting_drift_restarts_its_count() -> None:
    """POST drift (even the same value) or an in-process change starts degradation over."""
    faults = Faults(drift=1.0)
    mib = 1024 * 1024
    async with _client(create_app(faults)) as client:
        await _stream(client, mib)
        assert await _stream(client, 4096) == b"\xff" * 4096  # bias 0 + 1.0 * 1 MiB = 1
        posted = await client.post("/sim/faults", json={"drift": 1.0})
        assert posted.status_code == 200
        assert posted.json()["drift"] == 1.0
        assert 0.4 < _one_fraction(await _stream(client, 4096)) < 0.6
        await _stream(client, mib)
        faults.drift = 2.0
        assert 0.4 < _one_fraction(await _stream(client, 4096)) < 0.6
        await _stream(client, mib // 2)
        assert await _stream(client, 4096) == b"\xff" * 4096


@pytest.mark.anyio
async def test_stats_count_healthy_and_faulty_bytes_exactly() -> None:
    """Bytes served under bias, stuck or a replay are faulty; the rest are healthy."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        assert await _stats(client) == {
            "served_bytes": 0,
            "faulty_bytes": 0,
            "healthy_bytes": 0,
            "repeated_bytes": 0,
        }
        await _stream(client, 4096)
        assert (await client.post("/sim/faults", json={"bias": 0.3})).status_code == 200
        await _stream(client, 8192)
        assert await _stats(client) == {
            "served_bytes": 12288,
            "faulty_bytes": 8192,
            "healthy_bytes": 4096,
            "repeated_bytes": 0,
        }
        await client.post("/sim/faults", json={"bias": 0, "stuck": True})
        await _stream(client, 100)
        await client.post("/sim/faults", json={"stuck": False, "repeat": 1.0})
        await _stream(client, 1000)
        await client.post("/sim/faults", json={"repeat": 0})
        await _stream(client, 10)
        stats = await _stats(client)
    assert stats == {
        "served_bytes": 12288 + 100 + 1000 + 10,
        "faulty_bytes": 8192 + 100 + 1000,
        "healthy_bytes": 4096 + 10,
        "repeated_bytes": 1000,
    }


@pytest.mark.anyio
async def test_stats_count_raw_bytes_behind_integers_and_doubles() -> None:
    """int, short and double draw through the same source, so their raw bytes are counted."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        assert (await client.get("/api/2.0/double", params={"quantity": 10})).status_code == 200
        assert await _stats(client) == {
            "served_bytes": 80,
            "faulty_bytes": 0,
            "healthy_bytes": 80,
            "repeated_bytes": 0,
        }
        faults.stuck = True
        assert (await client.get("/api/2.0/int", params={"quantity": 10})).status_code == 200
        stats = await _stats(client)
    # Rejection sampling over-draws, so the int request took at least its 40 bytes.
    assert stats["served_bytes"] - 80 >= 40
    assert stats["served_bytes"] % 4 == 0
    assert stats["faulty_bytes"] == stats["served_bytes"] - 80
    assert stats["healthy_bytes"] == 80


@pytest.mark.anyio
async def test_stats_do_not_count_requests_that_failed_before_drawing() -> None:
    """An injected 500 or a 400 serves no bytes, so the counters stay at zero."""
    faults = Faults(error_rate=1.0)
    async with _client(create_app(faults)) as client:
        assert (await client.get("/api/2.0/streambytes", params={"size": 64})).status_code == 500
        assert (await client.get("/api/2.0/streambytes", params={"size": -1})).status_code == 400
        assert (await _stats(client))["served_bytes"] == 0


@pytest.mark.anyio
async def test_systeminfo_and_faults_show_repeat_and_drift() -> None:
    """The new faults appear wherever the others do."""
    faults = Faults(repeat=0.25, drift=0.125)
    async with _client(create_app(faults)) as client:
        info = (await client.get("/api/2.0/systeminfo")).json()
        shown = (await client.get("/sim/faults")).json()
    assert (info["faults"]["repeat"], info["faults"]["drift"]) == (0.25, 0.125)
    assert (shown["repeat"], shown["drift"]) == (0.25, 0.125)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"repeat": 1.5}', "repeat"),
        (b'{"repeat": -0.1}', "repeat"),
        (b'{"repeat": "0.5"}', "repeat"),
        (b'{"repeat": true}', "repeat"),
        (b'{"repeat": null}', "repeat"),
        (b'{"repeat": NaN}', "repeat"),
        (b'{"repeat": Infinity}', "repeat"),
        (b'{"drift": -1}', "drift"),
        (b'{"drift": "0.1"}', "drift"),
        (b'{"drift": false}', "drift"),
        (b'{"drift": NaN}', "drift"),
        (b'{"drift": Infinity}', "drift"),
        (b'{"drift": -Infinity}', "drift"),
        (b'{"drift": 1e999}', "drift"),
        (b'{"drift": 1' + b"0" * 400 + b"}", "drift"),
        (b'{"bias": 1' + b"0" * 400 + b"}", "bias"),
        (b'{"bias": 0.5, "drift": -0.5}', "drift"),
        (b'{"repeat": 2, "drift": 0.5}', "repeat"),
    ],
)
async def test_control_endpoint_rejects_bad_repeat_and_drift(body: bytes, field: str) -> None:
    """A bad repeat or drift (type, range, NaN, infinity, bool) is a 400 naming it, no change."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        response = await client.post("/sim/faults", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert response.json()["detail"].startswith(f"{field} must be")
    assert faults == Faults()


@pytest.mark.anyio
async def test_control_endpoint_accepts_repeat_and_drift_bounds() -> None:
    """repeat 0 and 1 and any finite drift >= 0 (integer JSON too) are accepted as floats."""
    faults = Faults()
    async with _client(create_app(faults)) as client:
        response = await client.post("/sim/faults", json={"repeat": 1, "drift": 3})
    assert response.status_code == 200
    assert faults == Faults(repeat=1.0, drift=3.0)
    assert isinstance(faults.repeat, float)
    assert isinstance(faults.drift, float)


def test_create_app_refuses_bad_faults() -> None:
    """A bad Faults value fails when the app is built, not on the first request."""
    with pytest.raises(ValueError, match="bias must be between 0 and 1"):
        create_app(Faults(bias=2.0))


@pytest.mark.anyio
async def test_latency_fault_sleeps_inside_the_handler(sleeps: list[float]) -> None:
    """latency_ms is turned into a sleep of that many milliseconds per API request."""
    await _get(Faults(latency_ms=250), "/api/2.0/streambytes", size=8)
    assert sleeps == [0.25]


@pytest.mark.anyio
async def test_bitrate_cap_makes_a_large_request_wait(sleeps: list[float]) -> None:
    """With an 8000 bit/s cap (800-bit burst), 1100 bytes wait for the missing 8000 bits."""
    await _get(Faults(max_bitrate=8000), "/api/2.0/streambytes", size=1100)
    assert sleeps == [pytest.approx(1.0)]
