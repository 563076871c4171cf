"""The gateway's HTTP face, driven in process: routes, parameters, auth, limits, push refusals."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qrng_dd.config import GatewaySettings
from qrng_dd.gateway.server import GatewayServer, build_app
from qrng_dd.gateway.service import EntropyService
from qrng_dd.net import bind
from qrng_dd.wire.packet import MAX_PACKET_BYTES, PacketKey
from qrng_dd.wire.telemetry import encode_telemetry
from tests.conftest import KEY_HEX
from tests.support.gateway import API_KEY, OTHER_KEY, gateway_settings, make_raw

OTHER_HMAC = "ff" * 32
PROBLEM = "application/problem+json"
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _settings(env: dict[str, str]) -> GatewaySettings:
    return gateway_settings(env)


@dataclass
class Gateway:
    """An in-process gateway and a client wired to it."""

    client: httpx.AsyncClient
    service: EntropyService
    key: PacketKey

    async def push(self, raw: bytes) -> httpx.Response:
        return await self.client.post("/push", content=raw)

    async def fill(self, total: int, chunk: int = 4096, source: str = "collector") -> None:
        """Push real packets until ``total`` more bytes have been pooled."""
        while total:
            size = min(chunk, total)
            response = await self.push(make_raw(self.key, os.urandom(size), source=source))
            assert response.status_code == 200, response.text
            assert response.json()["accepted_bytes"] == size
            total -= size

    async def get(self, url: str, key: str = API_KEY) -> httpx.Response:
        return await self.client.get(url, headers={"Authorization": f"Bearer {key}"})

    async def available(self) -> int:
        response = await self.get("/api/status")
        assert response.status_code == 200
        value: int = response.json()["buffer_bytes_available"]
        return value

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        return _samples(response.text)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@contextlib.asynccontextmanager
async def _gateway(**env: str) -> AsyncIterator[Gateway]:
    service = EntropyService(_settings(env))
    app = build_app(service)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield Gateway(client, service, PacketKey.from_hex(KEY_HEX))


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


# -- happy paths ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("n", [1, 32, 4096])
async def test_random_hex_is_lowercase_and_decodes_to_the_requested_length(n: int) -> None:
    """Hex is lowercase text/plain and decodes to exactly the bytes asked for."""
    async with _gateway() as gw:
        await gw.fill(8192)
        response = await gw.get(f"/api/random?bytes={n}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == response.text.lower()
        assert len(bytes.fromhex(response.text)) == n


@pytest.mark.anyio
async def test_random_default_is_32_bytes_of_hex() -> None:
    """Without parameters /api/random serves 32 bytes as hex."""
    async with _gateway() as gw:
        await gw.fill(100)
        response = await gw.get("/api/random")
        assert response.status_code == 200
        assert len(bytes.fromhex(response.text)) == 32
        assert await gw.available() == 68


@pytest.mark.anyio
@pytest.mark.parametrize("n", [1, 2, 3, 100])
async def test_random_base64_is_padded_standard_base64(n: int) -> None:
    """Base64 is standard, padded, and decodes to the requested length."""
    async with _gateway() as gw:
        await gw.fill(200)
        response = await gw.get(f"/api/random?bytes={n}&encoding=base64")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert len(response.text) % 4 == 0
        assert len(base64.b64decode(response.text, validate=True)) == n


@pytest.mark.anyio
async def test_random_binary_is_octet_stream_of_pool_bytes() -> None:
    """Binary answers are raw pool bytes, in FIFO order, as application/octet-stream."""
    async with _gateway() as gw:
        data = os.urandom(1000)
        response = await gw.push(make_raw(gw.key, data))
        assert response.status_code == 200
        response = await gw.get("/api/random?bytes=600&encoding=binary")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.content == data[:600]
        second = await gw.get("/api/random?bytes=400&encoding=binary")
        assert second.content == data[600:]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 100), (-5, 5), (INT64_MIN, INT64_MAX), (INT64_MIN, INT64_MIN), (INT64_MAX, INT64_MAX)],
)
async def test_integers_are_in_the_inclusive_range(low: int, high: int) -> None:
    """Integers stay within [min, max], including the full signed 64-bit range."""
    async with _gateway() as gw:
        await gw.fill(16384)
        response = await gw.get(f"/api/integers?count=200&min={low}&max={high}")
        assert response.status_code == 200
        values = response.json()
        assert len(values) == 200
        assert all(type(v) is int and low <= v <= high for v in values)


@pytest.mark.anyio
async def test_integers_with_min_equal_to_max_repeat_that_value() -> None:
    """min == max is allowed and every value is that number."""
    async with _gateway() as gw:
        await gw.fill(4096)
        response = await gw.get("/api/integers?count=5&min=-7&max=-7")
        assert response.status_code == 200
        assert response.json() == [-7] * 5


@pytest.mark.anyio
async def test_full_range_integers_reach_both_signs() -> None:
    """The full int64 range yields negative and positive values (no crash, no clipping)."""
    async with _gateway() as gw:
        await gw.fill(16384)
        response = await gw.get(f"/api/integers?count=1000&min={INT64_MIN}&max={INT64_MAX}")
        values = response.json()
        assert min(values) < 0 < max(values)


@pytest.mark.anyio
async def test_integers_default_to_ten_values_from_zero_to_one_hundred() -> None:
    """Defaults: count 10, min 0, max 100."""
    async with _gateway() as gw:
        await gw.fill(4096)
        values = (await gw.get("/api/integers")).json()
        assert len(values) == 10
        assert all(0 <= v <= 100 for v in values)


@pytest.mark.anyio
async def test_floats_are_in_the_half_open_unit_interval() -> None:
    """Floats are in [0, 1) and use 8 pool bytes each."""
    async with _gateway() as gw:
        await gw.fill(8000)
        response = await gw.get("/api/floats?count=1000")
        assert response.status_code == 200
        values = response.json()
        assert len(values) == 1000
        assert all(isinstance(v, float) and 0.0 <= v < 1.0 for v in values)
        assert await gw.available() == 0


@pytest.mark.anyio
async def test_one_uuid_is_plain_text_version_4() -> None:
    """count=1 (the default) answers one RFC 9562 v4 UUID as text/plain."""
    async with _gateway() as gw:
        await gw.fill(64)
        response = await gw.get("/api/uuid")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        value = uuid.UUID(response.text)
        assert str(value) == response.text
        assert value.version == 4
        assert value.variant == uuid.RFC_4122


@pytest.mark.anyio
async def test_several_uuids_are_a_json_array_of_distinct_version_4() -> None:
    """count>1 answers a JSON array of distinct v4 UUIDs."""
    async with _gateway() as gw:
        await gw.fill(1600)
        response = await gw.get("/api/uuid?count=100")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        values = [uuid.UUID(text) for text in response.json()]
        assert len(set(values)) == 100
        assert all(v.version == 4 and v.variant == uuid.RFC_4122 for v in values)


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_monte_carlo_answers_the_seed_fields(method: str) -> None:
    """The pi estimate works by GET and POST and takes 16 bytes per iteration."""
    async with _gateway() as gw:
        await gw.fill(16000)
        response = await gw.client.request(
            method,
            "/api/test/monte-carlo?iterations=1000",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 200
        body = response.json()
        assert {
            "estimated_pi",
            "error",
            "error_percent",
            "iterations",
            "convergence_rate",
            "quality_assessment",
        } <= body.keys()
        assert body["iterations"] == 1000
        assert 0.0 <= body["estimated_pi"] <= 4.0
        assert await gw.available() == 0


@pytest.mark.anyio
async def test_status_has_every_documented_field() -> None:
    """/api/status carries DESIGN §5's fields, per-source sequence state included."""
    async with _gateway(QRNG_BUFFER_SIZE="10000") as gw:
        await gw.fill(5000, chunk=1000, source="col-a")
        await gw.get("/api/random?bytes=100")
        response = await gw.get("/api/status")
        assert response.status_code == 200
        body = response.json()
        expected = {
            "status",
            "buffer_fill_percent",
            "buffer_bytes_available",
            "buffer_capacity_bytes",
            "oldest_data_age_seconds",
            "uptime_seconds",
            "total_requests_served",
            "total_bytes_served",
            "sources",
            "rejected_packets",
            "warnings",
        }
        assert expected <= body.keys()
        assert body["status"] == "healthy"
        assert body["buffer_bytes_available"] == 4900
        assert body["buffer_capacity_bytes"] == 10000
        assert body["buffer_fill_percent"] == pytest.approx(49.0)
        assert body["total_requests_served"] == 1
        assert body["total_bytes_served"] == 100
        assert body["oldest_data_age_seconds"] >= 0
        source = body["sources"]["col-a"]
        assert source["packets_accepted"] == 5
        assert source["sequence_gaps"] == 0
        assert {"last_seq", "last_packet_age_seconds"} <= source.keys()
        assert set(body["rejected_packets"]) >= {"bad_mac", "replay", "stale", "oversize"}
        assert isinstance(body["warnings"], list)


@pytest.mark.anyio
async def test_health_follows_the_fill_thresholds() -> None:
    """Healthy at >= 30 %, degraded from 10 % to 30 %, unhealthy (503) below 10 %."""
    async with _gateway(QRNG_BUFFER_SIZE="10000") as gw:
        response = await gw.client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "unhealthy"
        await gw.fill(3000)
        expectations = [(0, 200, "healthy"), (1, 200, "degraded"), (1999, 200, "degraded")]
        expectations.append((1, 503, "unhealthy"))
        for take, status, state in expectations:
            if take:
                assert (await gw.get(f"/api/random?bytes={take}")).status_code == 200
            response = await gw.client.get("/health")
            assert response.status_code == status
            body = response.json()
            assert body["status"] == state
            assert {"buffer_fill_percent", "uptime_seconds", "warnings"} <= body.keys()


@pytest.mark.anyio
async def test_metrics_expose_every_documented_name() -> None:
    """/metrics is Prometheus text with every gateway metric of DESIGN §10."""
    async with _gateway() as gw:
        await gw.fill(1000)
        await gw.get("/api/random?bytes=10")
        await gw.push(b"junk")
        response = await gw.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        names = {name for name, _ in _samples(response.text)}
        for name in (
            "qrng_buffer_fill_percent",
            "qrng_buffer_bytes_available",
            "qrng_buffer_capacity_bytes",
            "qrng_buffer_oldest_age_seconds",
            "qrng_requests_total",
            "qrng_bytes_served_total",
            "qrng_request_latency_seconds_bucket",
            "qrng_uptime_seconds",
            "qrng_packets_accepted_total",
            "qrng_packets_rejected_total",
            "qrng_bytes_received_total",
            "qrng_bytes_dropped_total",
        ):
            assert name in names, name
        samples = _samples(response.text)
        assert samples[("qrng_bytes_served_total", ())] == 10
        assert samples[("qrng_buffer_bytes_available", ())] == 990
        assert samples[("qrng_requests_total", (("endpoint", "random"), ("status", "200")))] == 1


@pytest.mark.anyio
async def test_openapi_describes_every_route() -> None:
    """/openapi.json lists exactly the app's routes."""
    service = EntropyService(_settings({}))
    app = build_app(service)
    route_paths = {getattr(route, "path", None) for route in app.routes} - {None}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        document = response.json()
        assert document["openapi"].startswith("3.")
        assert set(document["paths"]) == route_paths


@pytest.mark.anyio
async def test_docs_is_an_html_page() -> None:
    """/docs serves the viewer as HTML, without an API key."""
    async with _gateway() as gw:
        response = await gw.client.get("/docs")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "openapi.json" in response.text


# -- parameters ----------------------------------------------------------------------------

# (route, parameter, allowed minimum, allowed maximum)
_INT_PARAMS = [
    ("/api/random", "bytes", 1, 65536),
    ("/api/integers", "count", 1, 1000),
    ("/api/integers", "min", INT64_MIN, INT64_MAX),
    ("/api/integers", "max", INT64_MIN, INT64_MAX),
    ("/api/floats", "count", 1, 1000),
    ("/api/uuid", "count", 1, 100),
    ("/api/test/monte-carlo", "iterations", 1, 10_000_000),
    ("/api/test/randomness", "bytes", 2500, 1_048_576),
]
_BAD_VALUES: dict[str, Callable[[int, int], str]] = {
    "word": lambda lo, hi: "abc",
    "decimal": lambda lo, hi: "1.5",
    "hex": lambda lo, hi: "0x10",
    "empty": lambda lo, hi: "",
    "zero": lambda lo, hi: "0",
    "negative": lambda lo, hi: "-1",
    "above": lambda lo, hi: str(hi + 1),
    "below": lambda lo, hi: str(lo - 1),
    "huge": lambda lo, hi: "9" * 40,
}


def _bad_cases() -> list[Any]:
    cases = []
    for route, name, low, high in _INT_PARAMS:
        for label, make in _BAD_VALUES.items():
            value = make(low, high)
            if low <= 0 <= high and label in ("zero", "negative"):
                continue  # valid for min/max
            cases.append(pytest.param(route, name, value, id=f"{route}-{name}-{label}"))
    return cases


@pytest.mark.anyio
@pytest.mark.parametrize(("route", "name", "value"), _bad_cases())
async def test_bad_parameter_is_a_400_problem_and_takes_nothing(
    route: str, name: str, value: str
) -> None:
    """Every malformed or out-of-range value is a 400 problem naming it; the pool is untouched."""
    async with _gateway(QRNG_BUFFER_SIZE="1048576") as gw:
        await gw.fill(4096)
        response = await gw.get(f"{route}?{name}={value}")
        body = _assert_problem(response, 400)
        assert name in body["detail"]
        assert await gw.available() == 4096


@pytest.mark.anyio
async def test_min_above_max_is_a_400_problem() -> None:
    """min > max is refused before any entropy is touched."""
    async with _gateway() as gw:
        await gw.fill(100)
        body = _assert_problem(await gw.get("/api/integers?min=10&max=9"), 400)
        assert "min" in body["detail"]
        assert await gw.available() == 100


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["base32", "HEX", "", "binary2"])
async def test_unknown_encoding_is_a_400_problem(encoding: str) -> None:
    """Only hex, base64 and binary are encodings."""
    async with _gateway() as gw:
        await gw.fill(100)
        body = _assert_problem(await gw.get(f"/api/random?bytes=4&encoding={encoding}"), 400)
        assert "encoding" in body["detail"]
        assert await gw.available() == 100


# -- authentication ------------------------------------------------------------------------

_AUTHED = [
    "/api/random",
    "/api/integers",
    "/api/floats",
    "/api/uuid",
    "/api/test/monte-carlo",
    "/api/status",
]


@pytest.mark.anyio
@pytest.mark.parametrize("route", _AUTHED)
async def test_missing_or_wrong_api_key_is_a_401_problem(route: str) -> None:
    """No key, an unknown key, or a non-bearer scheme is refused with 401 and takes nothing."""
    async with _gateway() as gw:
        await gw.fill(1000)
        attempts = [
            await gw.client.get(route),
            await gw.client.get(f"{route}?api_key=wrong-key-000000000000"),
            await gw.client.get(route, headers={"Authorization": "Bearer wrong-key-0000000000"}),
            await gw.client.get(route, headers={"Authorization": f"Basic {API_KEY}"}),
            await gw.client.get(f"{route}?api_key="),
        ]
        for response in attempts:
            _assert_problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        assert await gw.available() == 1000


@pytest.mark.anyio
@pytest.mark.parametrize("key", [API_KEY, OTHER_KEY])
async def test_api_key_works_in_query_and_bearer_header(key: str) -> None:
    """Both ?api_key= and Authorization: Bearer authenticate, for every configured key."""
    async with _gateway() as gw:
        await gw.fill(100)
        by_query = await gw.client.get(f"/api/random?bytes=4&api_key={key}")
        by_header = await gw.client.get(
            "/api/random?bytes=4", headers={"Authorization": f"Bearer {key}"}
        )
        assert by_query.status_code == 200
        assert by_header.status_code == 200
        assert await gw.available() == 92


@pytest.mark.anyio
async def test_unknown_path_and_wrong_method_are_problems() -> None:
    """404 and 405 are application/problem+json too."""
    async with _gateway() as gw:
        _assert_problem(await gw.client.get("/nope"), 404)
        _assert_problem(await gw.client.get("/push"), 405)
        _assert_problem(await gw.client.post(f"/api/random?api_key={API_KEY}"), 405)


# -- short of entropy ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "/api/random?bytes=64",
        "/api/random?bytes=41&encoding=binary",
        "/api/integers?count=10",
        f"/api/integers?count=6&min={INT64_MIN}&max={INT64_MAX}",
        "/api/floats?count=10",
        "/api/uuid?count=3",
        "/api/test/monte-carlo?iterations=10",
    ],
)
async def test_short_pool_is_503_with_retry_after_and_takes_nothing(url: str) -> None:
    """A request the pool cannot fill is 503 + Retry-After, and no byte is consumed."""
    async with _gateway() as gw:
        data = os.urandom(40)
        await gw.push(make_raw(gw.key, data))
        response = await gw.get(url)
        _assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1
        assert await gw.available() == 40
        assert (await gw.get("/api/status")).json()["total_bytes_served"] == 0
        after = await gw.get("/api/random?bytes=40&encoding=binary")
        assert after.content == data


# -- rate limits ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limit_refuses_the_sixth_quick_request_of_one_key_only() -> None:
    """With 5 requests/s and burst 5, the 6th is 429 + Retry-After; another key still passes."""
    async with _gateway(QRNG_RATE_LIMIT="5", QRNG_RATE_BURST="5") as gw:
        await gw.fill(100)
        statuses = [(await gw.get("/api/random?bytes=1")).status_code for _ in range(5)]
        assert statuses == [200] * 5
        refused = await gw.get("/api/random?bytes=1")
        _assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert (await gw.get("/api/random?bytes=1", key=OTHER_KEY)).status_code == 200
        assert await gw.available() == 94


@pytest.mark.anyio
async def test_byte_budget_refuses_a_key_that_drains_the_pool() -> None:
    """QRNG_BYTE_RATE_LIMIT caps bytes per second per key with a 429 + Retry-After."""
    async with _gateway(QRNG_BYTE_RATE_LIMIT="1000") as gw:
        await gw.fill(4000)
        assert (await gw.get("/api/random?bytes=1000")).status_code == 200
        refused = await gw.get("/api/random?bytes=1000")
        _assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert (await gw.get("/api/random?bytes=1000", key=OTHER_KEY)).status_code == 200
        assert await gw.available() == 2000


# -- push refusals -------------------------------------------------------------------------


def _signed_body(key: PacketKey, fields: list[Any]) -> bytes:
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    framed: bytes = msgpack.packb([1, body, key.tag(body)], use_bin_type=True)
    return framed


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _bad_crc(key: PacketKey) -> bytes:
    data = os.urandom(64)
    fields = [os.urandom(16), 0, "collector", "gateway", _now_us(), _now_us(), data]
    return _signed_body(key, [*fields, (zlib.crc32(data) + 1) % 2**32])


def _undecryptable(key: PacketKey) -> bytes:
    data = os.urandom(64)  # flagged encrypted, but not ciphertext under our key
    fields = [os.urandom(16), 1, "collector", "gateway", _now_us(), _now_us(), data]
    return _signed_body(key, [*fields, zlib.crc32(data)])


_REFUSALS: list[Any] = [
    pytest.param(
        lambda k: make_raw(PacketKey.from_hex(OTHER_HMAC), b"x" * 64), 401, "bad_mac", id="forged"
    ),
    pytest.param(lambda k: make_raw(k, b"x" * 64, dest="elsewhere"), 403, "wrong_dest", id="dest"),
    pytest.param(
        lambda k: make_raw(k, b"x" * 64, ts_us=_now_us() - 400_000_000), 400, "stale", id="stale"
    ),
    pytest.param(
        lambda k: make_raw(k, b"x" * 64, ts_us=_now_us() + 120_000_000), 400, "future", id="future"
    ),
    pytest.param(lambda k: b"not a packet", 400, "malformed", id="garbage"),
    pytest.param(lambda k: b"", 400, "malformed", id="empty"),
    pytest.param(lambda k: make_raw(k, b"x" * 64)[:-5], 400, "malformed", id="truncated"),
    pytest.param(
        lambda k: _signed_body(k, ["not", "eight", "fields"]), 400, "malformed", id="body"
    ),
    pytest.param(_bad_crc, 400, "bad_crc", id="crc"),
    pytest.param(_undecryptable, 400, "decrypt", id="decrypt"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("make", "status", "reason"), _REFUSALS)
async def test_refused_push_answers_its_status_and_is_counted_under_its_reason(
    make: Any, status: int, reason: str
) -> None:
    """Each refusal has its HTTP status and increments exactly its reason's counter."""
    async with _gateway() as gw:
        response = await gw.push(make(gw.key))
        body = _assert_problem(response, status)
        assert body["detail"].startswith(reason)
        metrics = await gw.metrics()
        rejected = {
            labels[0][1]: value
            for (name, labels), value in metrics.items()
            if name == "qrng_packets_rejected_total"
        }
        assert rejected[reason] == 1
        assert sum(rejected.values()) == 1
        status_doc = (await gw.get("/api/status")).json()
        assert status_doc["rejected_packets"][reason] == 1
        assert status_doc["buffer_bytes_available"] == 0


@pytest.mark.anyio
async def test_replayed_push_is_409_and_pools_nothing_twice() -> None:
    """The identical packet pushed twice is accepted once and then refused as a replay."""
    async with _gateway() as gw:
        raw = make_raw(gw.key, os.urandom(100))
        assert (await gw.push(raw)).status_code == 200
        body = _assert_problem(await gw.push(raw), 409)
        assert body["detail"].startswith("replay")
        older = make_raw(gw.key, os.urandom(10), seq=1)
        _assert_problem(await gw.push(older), 409)
        metrics = await gw.metrics()
        assert metrics[("qrng_packets_rejected_total", (("reason", "replay"),))] == 2
        assert await gw.available() == 100


async def _count_oversize(gw: Gateway) -> float:
    return (await gw.metrics())[("qrng_packets_rejected_total", (("reason", "oversize"),))]


@pytest.mark.anyio
async def test_oversize_push_is_413_and_counted() -> None:
    """A body over the packet limit with an honest Content-Length is refused with 413."""
    async with _gateway() as gw:
        response = await gw.push(b"\x00" * (MAX_PACKET_BYTES + 1))
        _assert_problem(response, 413)
        assert response.headers["connection"] == "close"  # the body was left unread
        assert await _count_oversize(gw) == 1
        assert await gw.available() == 0


async def _stalled_push(
    app: Any, started: anyio.Event, release: anyio.Event
) -> tuple[int, dict[bytes, bytes], bytes]:
    """A /push whose body sends 100 bytes of a declared 1000, then nothing until ``release``;
    the status, headers and problem body the app answered."""
    messages: list[MutableMapping[str, Any]] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            started.set()
            return {"type": "http.request", "body": b"\x00" * 100, "more_body": True}
        await release.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/push", "raw_path": b"/push", "query_string": b"",
        "root_path": "", "headers": [(b"content-length", b"1000")],
        "client": ("127.0.0.1", 1), "server": ("gw", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    if not messages:  # the client left first: nobody to answer
        return 0, {}, b""
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return messages[0]["status"], dict(messages[0]["headers"]), body


@pytest.mark.anyio
async def test_a_push_body_that_stops_arriving_is_cut_off_with_408() -> None:
    """A slow-loris body holds its slot no longer than QRNG_BODY_TIMEOUT_S: 408, close."""
    app = build_app(EntropyService(_settings({"QRNG_BODY_TIMEOUT_S": "0.1"})))
    status, headers, body = await _stalled_push(app, anyio.Event(), anyio.Event())
    assert (status, headers[b"connection"]) == (408, b"close")
    assert b"QRNG_BODY_TIMEOUT_S" in body


@pytest.mark.anyio
async def test_push_bodies_past_the_limit_read_at_once_are_refused_busy() -> None:
    """With QRNG_MAX_PUSH_BODIES=1 and one body half read, the next push is 503 with
    Retry-After (a collector sends it again) and closed; once the first ends, pushes go in."""
    service = EntropyService(_settings({"QRNG_MAX_PUSH_BODIES": "1"}))
    app = build_app(service)
    transport = httpx.ASGITransport(app=app)
    started, release = anyio.Event(), anyio.Event()
    async with (
        anyio.create_task_group() as tg,
        httpx.AsyncClient(transport=transport, base_url="http://gw") as client,
    ):
        tg.start_soon(_stalled_push, app, started, release)
        await started.wait()
        key = PacketKey.from_hex(KEY_HEX)
        busy = await client.post("/push", content=make_raw(key, b"x" * 64))
        _assert_problem(busy, 503)
        assert (busy.headers["retry-after"], busy.headers["connection"]) == ("1", "close")
        assert "QRNG_MAX_PUSH_BODIES" in busy.json()["detail"]
        release.set()
    assert service.push_bodies_reading == 0
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.post("/push", content=make_raw(key, b"x" * 64))
    assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("content_length", [None, "100"], ids=["chunked", "lying-length"])
async def test_oversize_streamed_push_is_refused_while_reading(content_length: str | None) -> None:
    """A chunked body, or one under a lying Content-Length, is cut off once past the limit."""
    chunk = 65536
    total_chunks = 64  # 4 MiB offered, four times the limit
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(total_chunks):
            pulled += 1
            yield b"\x00" * chunk

    headers = {} if content_length is None else {"Content-Length": content_length}
    async with _gateway() as gw:
        response = await gw.client.post("/push", content=body(), headers=headers)
        _assert_problem(response, 413)
        assert response.headers["connection"] == "close"
        assert pulled <= MAX_PACKET_BYTES // chunk + 2
        assert await _count_oversize(gw) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("length", "status"),
    [(b"9" * 5000, 413), (b"\xc2\xb2", 400), (b"1" + b"0" * 19, 413), (b"-1", 400)],
    ids=["5000-digits", "superscript-two", "20-digits", "negative"],
)
async def test_an_odd_content_length_on_push_is_a_4xx_never_a_500(
    length: bytes, status: int
) -> None:
    """Found by the RANDOM.ORG work: int() of 5000 digits raised, and "\u00b2" passed
    str.isdigit() then failed int(): both were 500s. A server would usually refuse such a
    header first; the front must not rely on it."""
    service = EntropyService(_settings({}))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"\x93", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "POST", "path": "/push", "query_string": b"",
             "headers": [(b"content-length", length)]}  # fmt: skip
    await build_app(service)(scope, receive, send)
    assert sent[0]["status"] == status
    assert service.pool.available == 0


@pytest.mark.anyio
async def test_full_pool_push_is_507_and_the_packet_is_kept_for_later() -> None:
    """Under discard a full pool answers 507; the identical packet is accepted once room frees."""
    async with _gateway(QRNG_BUFFER_SIZE="1024") as gw:
        await gw.fill(1024)
        data = os.urandom(600)
        raw = make_raw(gw.key, data)
        response = await gw.push(raw)
        _assert_problem(response, 507)
        assert "retry-after" in response.headers
        assert await gw.available() == 1024
        assert (await gw.get("/api/random?bytes=1024")).status_code == 200
        again = await gw.push(raw)
        assert again.status_code == 200, again.text
        assert again.json()["accepted_bytes"] == 600
        assert again.json()["dropped_bytes"] == 0
        served = await gw.get("/api/random?bytes=600&encoding=binary")
        assert served.content == data
        _assert_problem(await gw.push(raw), 409)


@pytest.mark.anyio
async def test_push_into_a_nearly_full_pool_keeps_what_fits() -> None:
    """Under discard the part of a packet that does not fit is dropped and reported."""
    async with _gateway(QRNG_BUFFER_SIZE="1024") as gw:
        await gw.fill(1000)
        response = await gw.push(make_raw(gw.key, os.urandom(100)))
        assert response.status_code == 200
        assert response.json() == {
            "accepted_bytes": 24,
            "dropped_bytes": 76,
            "buffer_fill_percent": 100.0,
        }
        metrics = await gw.metrics()
        assert metrics[("qrng_bytes_dropped_total", (("reason", "overflow"),))] == 76


# -- telemetry -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_telemetry_shows_in_status_and_metrics_and_never_enters_the_pool() -> None:
    """Telemetry packets update sources, health and fetch-error metrics, pooling nothing."""
    async with _gateway() as gw:
        await gw.fill(500, source="col-t")
        stats = {
            "health": {"appliance-1": "quarantined", "appliance-2": "healthy"},
            "fetch_errors": {"appliance-1": 3, "appliance-2": 0},
        }
        raw = make_raw(gw.key, encode_telemetry(stats), source="col-t", flags=3)
        response = await gw.push(raw)
        assert response.status_code == 200
        assert response.json()["accepted_bytes"] == 0
        status_doc = (await gw.get("/api/status")).json()
        assert status_doc["buffer_bytes_available"] == 500
        source = status_doc["sources"]["col-t"]
        assert source["appliances"] == stats["health"]
        assert any("appliance-1" in w and "quarantined" in w for w in status_doc["warnings"])
        metrics = await gw.metrics()
        one = (("appliance", "appliance-1"), ("source", "col-t"))
        two = (("appliance", "appliance-2"), ("source", "col-t"))
        assert metrics[("qrng_source_health", one)] == 0.0
        assert metrics[("qrng_source_health", two)] == 1.0
        assert metrics[("qrng_collector_fetch_errors_total", one)] == 3
        assert metrics[("qrng_collector_fetch_errors_total", two)] == 0
        assert metrics[("qrng_buffer_bytes_available", ())] == 500
        assert metrics[("qrng_bytes_received_total", (("source", "col-t"),))] == 500
        served = await gw.get("/api/random?bytes=501")
        _assert_problem(served, 503)


# -- the server around the app -------------------------------------------------------------


def test_listening_socket_is_tcp_so_accepted_sockets_get_no_delay() -> None:
    """bind() names TCP as protocol: asyncio sets TCP_NODELAY only on such accepted sockets."""
    with bind("127.0.0.1", 0) as listener:
        assert listener.proto == socket.IPPROTO_TCP
        with socket.create_connection(listener.getsockname()) as _client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP


@pytest.mark.anyio
async def test_gateway_server_on_port_zero_serves_real_http_until_stopped() -> None:
    """GatewayServer binds before serving, so port 0 gives a known port; stop() ends serve()."""
    settings = _settings({"QRNG_HOST": "127.0.0.1", "QRNG_PORT": "0"})
    server = GatewayServer(settings)
    assert server.port > 0
    key = PacketKey.from_hex(KEY_HEX)
    with anyio.fail_after(15):
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(server.serve)
            pushed = await client.post("/push", content=make_raw(key, b"\x05" * 64))
            assert pushed.status_code == 200
            served = await client.get(f"/api/random?bytes=64&api_key={API_KEY}")
            assert served.text == "05" * 64
            server.stop()
    assert server.service.pool.taken_total == 64
