"""The raw-ASGI fast front answers exactly as the Starlette routes behind it do.

Two gateways with identical settings and identical pool contents are driven with the same
requests, one through :func:`build_app` (the :class:`FastFront`), one through the Starlette app
it wraps (every hot route is a Starlette route too). Status, the raw header list, the body, the
request metrics and the access-log events must be the same, request by request.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from qrng_dd.config import GatewaySettings, load
from qrng_dd.gateway.app import FastFront
from qrng_dd.gateway.server import build_app
from qrng_dd.gateway.service import EntropyService
from qrng_dd.wire.packet import MAX_PACKET_BYTES, PacketKey
from tests.conftest import KEY_HEX
from tests.support.gateway import make_raw

API_KEY = "test-api-key-0123456789"
OTHER_KEY = "other-api-key-9876543210"
BEARER = {"Authorization": f"Bearer {API_KEY}"}
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_HOT = {("GET", f"/api/{r}") for r in ("random", "integers", "floats", "uuid")} | {
    ("POST", "/push")
}

# (method, url, headers, body)
Request = tuple[str, str, dict[str, str], bytes | None]

_GETS: list[Request] = [
    ("GET", url, BEARER, None)
    for url in [
        "/api/random",
        "/api/random?bytes=16",
        "/api/random?bytes=5&encoding=base64",
        "/api/random?bytes=7&encoding=binary",
        "/api/random?bytes=4&bytes=9",
        "/api/random?bytes=0",
        "/api/random?bytes=abc",
        "/api/random?bytes=+3",
        "/api/random?bytes=%2B3",
        "/api/random?bytes=65537",
        "/api/random?bytes=4&encoding=HEX",
        "/api/random?bytes=4&encoding=",
        "/api/random?bytes=",
        "/api/random?bytes",
        "/api/random?bytes=60000",
        "/api/integers",
        "/api/integers?count=5&min=-3&max=3",
        f"/api/integers?count=4&min={INT64_MIN}&max={INT64_MAX}",
        "/api/integers?min=10&max=9",
        "/api/integers?count=1001",
        "/api/integers?count=3&max=99999999999999999999",
        "/api/floats",
        "/api/floats?count=3",
        "/api/floats?count=0",
        "/api/uuid",
        "/api/uuid?count=3",
        "/api/uuid?count=101",
        "/api/uuid?count=2&other=%FF%20x",
        "/api/uuid?&count=2&&",
        "/api/uuid?=5&count=2&=&count",
        "/api/floats?count=2&x=a+b",
        "/api/floats?count=2&x=a=b&count=3",
        "/api/floats?count=%32",
    ]
]
_AUTH: list[Request] = [
    ("GET", "/api/random?bytes=4", {}, None),
    ("GET", f"/api/random?bytes=4&api_key={OTHER_KEY}", {}, None),
    ("GET", f"/api/random?bytes=4&api_key=wrong&api_key={API_KEY}", {}, None),
    ("GET", f"/api/random?bytes=4&api_key={API_KEY}&api_key=wrong", {}, None),
    ("GET", "/api/random?bytes=4&api_key=", BEARER, None),
    ("GET", "/api/uuid", {"Authorization": f"Basic {API_KEY}"}, None),
    ("GET", "/api/uuid", {"Authorization": f"bearer   {API_KEY}  "}, None),
    ("GET", "/api/floats", {"Authorization": "Bearer wrong-key-0000000000"}, None),
    ("GET", "/api/integers", {"Authorization": "Bearer"}, None),
]
_FALL_THROUGH: list[Request] = [
    ("POST", "/api/random", BEARER, b""),
    ("HEAD", "/api/uuid", BEARER, None),
    ("GET", "/api/random/", BEARER, None),
    ("GET", "/push", {}, None),
    ("GET", "/nope", {}, None),
    ("GET", "/api/status", {}, None),
    ("GET", "/docs?x=1", {}, None),
]


def _settings(**env: str) -> GatewaySettings:
    values = {
        "QRNG_HMAC_SECRET_KEY": KEY_HEX,
        "QRNG_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "QRNG_RATE_LIMIT": "100000",
        "QRNG_ACCESS_LOG": "true",
        "QRNG_MAX_CLOCK_SKEW_S": "0",  # one clock: no quiet start
        "QRNG_BUFFER_SIZE": "65536",
    }
    values.update(env)
    return load(GatewaySettings, values)


@contextlib.asynccontextmanager
async def _pair(**env: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(fast front, Starlette alone) over two services built alike."""
    fast_app = build_app(EntropyService(_settings(**env)))
    slow_app = build_app(EntropyService(_settings(**env)))
    assert isinstance(fast_app, FastFront)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fast_app), base_url="http://gw") as f,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=slow_app.app), base_url="http://gw"
        ) as s,
    ):
        yield f, s


_QUERIES = ["", "a", "a=", "=a", "a=1&a=2", "&&a=1&", "a=b=c", "a=%41", "a+b=c+d", "a;b=1"]


@pytest.mark.parametrize("query", [*_QUERIES, "a=%FF&b=\xe9"])
def test_query_parsing_is_starlettes(query: str) -> None:
    from starlette.datastructures import QueryParams

    from qrng_dd.gateway.app import _query

    raw = query.encode("latin-1")
    expected = QueryParams(raw)
    assert _query(raw) == {k: expected.get(k) for k in expected}


def _headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The raw headers, the RateLimit state's values aside: the buckets refill between the
    two requests, so ``r`` and ``t`` may differ by the refill; the field itself must not."""
    return [(name, b"~" if name == b"ratelimit" else value) for name, value in response.headers.raw]


def _events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "latency_ms"} for e in logs]


async def _same(
    fast: httpx.AsyncClient, slow: httpx.AsyncClient, request: Request
) -> httpx.Response:
    method, url, headers, body = request
    with capture_logs() as fast_logs:
        a = await fast.request(method, url, headers=headers, content=body)
    with capture_logs() as slow_logs:
        b = await slow.request(method, url, headers=headers, content=body)
    assert a.status_code == b.status_code, (request, a.text, b.text)
    assert _headers(a) == _headers(b), request
    assert a.content == b.content, request
    assert _events(fast_logs) == _events(slow_logs), request
    if (method, url.split("?")[0]) in _HOT:
        assert [e["event"] for e in fast_logs][-1:] == ["request"], request
    return a


async def _metrics(client: httpx.AsyncClient) -> list[str]:
    text = (await client.get("/metrics")).text
    keep = ("qrng_requests_total", "qrng_request_latency_seconds_count", "qrng_bytes_")
    keep += ("qrng_packets_",)
    return sorted(line for line in text.splitlines() if line.startswith(keep))


async def _fill(fast: httpx.AsyncClient, slow: httpx.AsyncClient, total: int) -> None:
    key = PacketKey.from_hex(KEY_HEX)
    while total:
        size = min(4096, total)
        raw = make_raw(key, os.urandom(size))
        response = await _same(fast, slow, ("POST", "/push", {}, raw))
        assert response.status_code == 200
        total -= size


@pytest.mark.anyio
async def test_fast_front_answers_every_hot_request_like_starlette() -> None:
    async with _pair() as (fast, slow):
        await _fill(fast, slow, 40_000)
        for request in _GETS + _AUTH + _FALL_THROUGH:
            await _same(fast, slow, request)
        # Short of entropy: 503 with Retry-After, nothing taken, on both.
        left = (await fast.get("/api/status", headers=BEARER)).json()["buffer_bytes_available"]
        assert (await slow.get("/api/status", headers=BEARER)).json()[
            "buffer_bytes_available"
        ] == left
        assert left > 1000
        await _same(fast, slow, ("GET", f"/api/random?bytes={left - 1000}", BEARER, None))
        for url in ("/api/random?bytes=65536", "/api/integers?count=1000", "/api/uuid?count=100"):
            response = await _same(fast, slow, ("GET", url, BEARER, None))
            assert response.status_code == 503
        assert await _metrics(fast) == await _metrics(slow)


@pytest.mark.anyio
async def test_fast_front_refuses_pushes_like_starlette() -> None:
    key = PacketKey.from_hex(KEY_HEX)
    stale = make_raw(key, os.urandom(10), ts_us=1)
    async with _pair() as (fast, slow):
        raw = make_raw(key, os.urandom(1000))  # made after the gateways started
        assert (await _same(fast, slow, ("POST", "/push", {}, raw))).status_code == 200
        cases: list[Request] = [
            ("POST", "/push", {}, raw),  # replay
            ("POST", "/push", {}, stale),
            ("POST", "/push", {}, b"garbage"),
            ("POST", "/push", {}, b""),
            ("POST", "/push", {}, raw[:-1] + bytes([raw[-1] ^ 1])),
            ("POST", "/push", {}, make_raw(key, b"x", dest="elsewhere")),
            ("POST", "/push", {}, b"\x00" * (MAX_PACKET_BYTES + 1)),
            ("POST", "/push", {"Content-Length": "abc"}, b"\x00"),
            ("POST", "/push?ignored=1", {}, make_raw(key, os.urandom(64), source="other")),
        ]
        for request in cases:
            assert (await _same(fast, slow, request)).status_code != 500
        assert await _metrics(fast) == await _metrics(slow)


@pytest.mark.anyio
async def test_fast_front_rate_limits_like_starlette() -> None:
    async with _pair(QRNG_RATE_LIMIT="0.01", QRNG_RATE_BURST="3") as (fast, slow):
        await _fill(fast, slow, 4096)
        statuses = [
            (await _same(fast, slow, ("GET", "/api/random?bytes=8", BEARER, None))).status_code
            for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]
        assert await _metrics(fast) == await _metrics(slow)


@pytest.mark.anyio
async def test_fast_front_passes_other_scopes_and_keeps_state() -> None:
    app = build_app(EntropyService(_settings()))
    assert isinstance(app, FastFront)
    assert app.state.gateway is app.gateway
    assert {getattr(r, "path", None) for r in app.routes} >= {"/api/random", "/push", "/docs"}


class _Stream:
    """A reader over fixed bytes that records how much was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        assert len(chunk) == n
        self.pos += n
        return chunk


_BOUNDS = [
    (0, 100),
    (5, 5),
    (-3, 3),
    (INT64_MIN, INT64_MIN + 3 * 2**62 - 1),  # a quarter of all draws rejected
    (INT64_MIN, INT64_MAX),
    (INT64_MIN, INT64_MIN + 2**63 + 2**62),
    (INT64_MAX - 1, INT64_MAX),
    (0, 2**32 - 1),
    (-(2**40), 2**41 + 12345),
]


@pytest.mark.parametrize(("low", "high"), _BOUNDS)
def test_small_integers_match_the_numpy_path_byte_for_byte(low: int, high: int) -> None:
    from qrng_dd.gateway import derive

    for count in (1, 2, 10, derive.SMALL_INTEGERS):
        for _ in range(20):
            data = os.urandom(8 * count * 8)
            small, big = _Stream(data), _Stream(data)
            expected = derive._integers_numpy(big.read, count, low, high)
            assert derive.integers(small.read, count, low, high) == expected
            assert small.pos == big.pos
            assert all(low <= v <= high for v in expected)


def test_small_floats_match_the_numpy_path() -> None:
    import numpy as np

    from qrng_dd.gateway import derive

    for count in (1, 10, derive.SMALL_FLOATS):
        data = os.urandom(8 * count)
        draws = np.frombuffer(data, dtype="<u8") >> np.uint64(11)
        expected = (draws.astype(np.float64) * 2.0**-53).tolist()
        assert derive.floats(_Stream(data).read, count) == expected
    edge = b"\xff" * 8 + b"\x00" * 8
    assert derive.floats(_Stream(edge).read, 2) == [1 - 2.0**-53, 0.0]


@pytest.mark.parametrize("sources", [2, 3, 5])
def test_xor_mix_is_the_bytewise_xor_of_the_shortest_length(sources: int) -> None:
    from qrng_dd.collector.mixing import mix

    batches = [os.urandom(1000 + 7 * i) for i in range(sources)]
    expected = bytearray(batches[0][:1000])
    for batch in batches[1:]:
        for i in range(1000):
            expected[i] ^= batch[i]
    assert mix(batches, "xor") == bytes(expected)
    assert mix([b"", b"abc"], "xor") == b""


@pytest.mark.anyio
async def test_an_unexpected_failure_is_the_same_500_on_both_fronts() -> None:
    responses = []
    for front in ("fast", "starlette"):
        service = EntropyService(_settings())
        app = build_app(service)
        assert isinstance(app, FastFront)

        def boom(n: int) -> bytes:
            raise RuntimeError("pool on fire")

        service.take = boom  # type: ignore[method-assign]
        target = app if front == "fast" else app.app
        transport = httpx.ASGITransport(app=target, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            with capture_logs() as logs:
                response = await client.get("/api/random?bytes=4", headers=BEARER)
        assert [e["event"] for e in logs] == ["unhandled_error"]
        responses.append((response.status_code, response.headers.raw, response.content))
    assert responses[0] == responses[1]
    assert responses[0][0] == 500


# (method, url, requests left of a burst of 100 after it: status and a 400 charge nothing)
_ENTROPY_ROUTES = [
    ("GET", "/api/random?bytes=8", 99),
    ("GET", "/api/random?bytes=8&encoding=binary", 99),
    ("GET", "/api/integers?count=2", 99),
    ("GET", "/api/floats?count=2", 99),
    ("GET", "/api/uuid", 99),
    ("GET", "/api/uuid?count=2", 99),
    ("GET", "/api/test/monte-carlo?iterations=10", 99),
    ("POST", "/api/test/monte-carlo?iterations=10", 99),
    ("GET", "/api/test/randomness?bytes=2500", 99),
    ("GET", "/api/status", 100),
    ("GET", "/api/random?bytes=0", 100),  # a 400 to a known key is an answer to it too
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "url", "left"), _ENTROPY_ROUTES)
async def test_every_answer_to_a_key_is_no_store_with_its_rate_limit(
    method: str, url: str, left: int
) -> None:
    """Both fronts: ``Cache-Control: no-store`` (a shared cache must never serve these bytes
    again) and the RateLimit fields, the request just made already counted."""
    async with _pair(QRNG_RATE_LIMIT="50", QRNG_RATE_BURST="100") as (fast, slow):
        for client in (fast, slow):
            await client.post(
                "/push", content=make_raw(PacketKey.from_hex(KEY_HEX), os.urandom(8192))
            )
            response = await client.request(method, url, headers=BEARER)
            assert response.status_code in (200, 400), response.text
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["ratelimit-policy"] == '"requests";q=100;w=2'
            assert response.headers["ratelimit"].startswith(f'"requests";r={left};t=')


@pytest.mark.anyio
async def test_the_byte_budget_shows_in_the_fields_and_the_429() -> None:
    """With QRNG_BYTE_RATE_LIMIT the bytes policy joins; its 429 says when, both ways."""
    async with _pair(QRNG_BYTE_RATE_LIMIT="4096") as (fast, slow):
        for client in (fast, slow):
            await client.post(
                "/push", content=make_raw(PacketKey.from_hex(KEY_HEX), os.urandom(16384))
            )
            ok = await client.get("/api/random?bytes=4096", headers=BEARER)
            limited = await client.get("/api/random?bytes=4096", headers=BEARER)
            assert ok.status_code == 200
            assert ok.headers["ratelimit-policy"] == (
                '"requests";q=200000;w=2, "bytes";q=4096;w=1;qu="content-bytes"'
            )
            assert ok.headers["ratelimit"].endswith('"bytes";r=0;t=1')
            assert limited.status_code == 429
            assert limited.headers["retry-after"] == "1"
            assert limited.headers["cache-control"] == "no-store"
            assert limited.json()["detail"] == "rate limit for this key exceeded; retry in 1 s"


@pytest.mark.anyio
async def test_no_key_no_rate_limit_fields() -> None:
    """A 401 names no budget (whose would it be?) and /health is not an entropy answer."""
    async with _pair() as (fast, slow):
        for client in (fast, slow):
            missing = await client.get("/api/random")
            health = await client.get("/health")
            assert missing.status_code == 401
            assert "ratelimit" not in missing.headers
            assert "ratelimit" not in health.headers
