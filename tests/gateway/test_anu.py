"""The ANU QRNG-compatible routes in process: shapes, charges, x-api-key, 400s, the prefix."""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections import Counter
from typing import Any

import httpx
import pytest

from qrng_dd.config import GatewaySettings
from qrng_dd.errors import ConfigError
from qrng_dd.gateway.compat import anu
from qrng_dd.wire.packet import PacketKey
from tests.conftest import KEY_HEX
from tests.support.gateway import API_KEY, OTHER_KEY, asgi_client, gateway_settings, make_raw

WRONG_KEY = "wrong-api-key-000000000"
X_API_KEY = {"x-api-key": API_KEY}
BEARER = {"Authorization": f"Bearer {API_KEY}"}
LEGACY = anu.LEGACY_PATH
POOL = 2 * 1_048_576  # room for the largest legacy request (1024 strings of 1024 bytes)


def _settings(**env: str) -> GatewaySettings:
    return gateway_settings({"QRNG_BUFFER_SIZE": str(POOL), **env})


def _client(**env: str) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(_settings(**env))


async def _push(client: httpx.AsyncClient, data: bytes) -> None:
    """``data`` into the pool, in packets; the pool hands it out in this order."""
    key = PacketKey.from_hex(KEY_HEX)
    for i in range(0, len(data), 65_536):
        response = await client.post("/push", content=make_raw(key, data[i : i + 65_536]))
        assert response.status_code == 200, response.text


async def _status(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/status", headers=BEARER)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    return detail


def _uint16(raw: bytes) -> list[int]:
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


def _hex(raw: bytes, width: int) -> list[str]:
    return [raw[i : i + width].hex() for i in range(0, len(raw), width)]


# (url, bytes drawn, the answer expected from those bytes)
_SHAPES = [
    (
        f"{LEGACY}?length=7&type=uint8",
        7,
        lambda raw: {"type": "uint8", "length": 7, "data": list(raw), "success": True},
    ),
    (
        f"{LEGACY}?length=5&type=uint16&size=9",  # size only counts for hex16
        10,
        lambda raw: {"type": "uint16", "length": 5, "data": _uint16(raw), "success": True},
    ),
    (
        f"{LEGACY}?length=3&type=hex16&size=5",  # 5 bytes, 10 hex digits each
        15,
        lambda raw: {
            "type": "string",
            "length": 3,
            "size": 5,
            "data": _hex(raw, 5),
            "success": True,
        },
    ),
    (
        "/?length=6&type=uint8",
        6,
        lambda raw: {"success": True, "type": "uint8", "length": "6", "data": list(raw)},
    ),
    (
        "/?length=4&type=uint16",
        8,
        lambda raw: {"success": True, "type": "uint16", "length": "4", "data": _uint16(raw)},
    ),
    (
        "/?length=3&type=hex8&size=5",  # five 8-bit blocks: 10 hex digits each
        15,
        lambda raw: {"success": True, "type": "hex8", "length": "3", "data": _hex(raw, 5)},
    ),
    (
        "/?length=3&type=hex16&size=4",  # what qrandom asks: four 16-bit blocks, 64 bits
        24,
        lambda raw: {"success": True, "type": "hex16", "length": "3", "data": _hex(raw, 8)},
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("url", "drawn", "expected"), _SHAPES)
async def test_each_type_is_the_pool_bytes_reshaped_and_charged_as_drawn(
    url: str, drawn: int, expected: Any
) -> None:
    """The exact answer for known pool bytes: ANU's field order and types (legacy ``length``
    an int, AQN's a string; legacy hex16 says "string" and its size), uint16 big-endian, hex
    lowercase; ``total_bytes_served`` grows by exactly the bytes the answer shows."""
    async with _client() as client:
        data = os.urandom(drawn + 3)
        await _push(client, data)
        before = (await _status(client))["total_bytes_served"]
        response = await client.get(url, headers=X_API_KEY)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body == expected(data[:drawn])
        assert list(body) == list(expected(data[:drawn]))  # the order ANU sends
        assert (await _status(client))["total_bytes_served"] - before == drawn


@pytest.mark.anyio
async def test_values_cover_their_ranges_and_hex_has_its_length() -> None:
    """Full-size requests: every value inside its type's range, every string its length."""
    async with _client() as client:
        await _push(client, os.urandom(POOL))
        for url, low, high in [
            (f"{LEGACY}?length=1024&type=uint8", 0, 255),
            (f"{LEGACY}?length=1024&type=uint16", 0, 65535),
            ("/?length=1024&type=uint8", 0, 255),
            ("/?length=1024&type=uint16", 0, 65535),
        ]:
            values = (await client.get(url, headers=X_API_KEY)).json()["data"]
            assert len(values) == 1024
            assert all(low <= v <= high for v in values), url
            assert max(values) > high // 2 > min(values), url  # not stuck at one end
        for url, digits in [
            (f"{LEGACY}?length=1024&type=hex16&size=1024", 2048),
            (f"{LEGACY}?length=2&type=hex16", 2),
            ("/?length=1024&type=hex8&size=10", 20),
            ("/?length=1024&type=hex16&size=10", 40),
            ("/?length=5&type=hex16", 4),
        ]:
            strings = (await client.get(url, headers=X_API_KEY)).json()["data"]
            assert {len(s) for s in strings} == {digits}, url
            assert all(set(s) <= set("0123456789abcdef") for s in strings), url


@pytest.mark.anyio
async def test_uint8_passes_a_chi_square_test() -> None:
    """61,440 values in 256 cells. The bound is the chi-square distribution's mean plus ten
    standard deviations (255 degrees of freedom: 255 + 10 * sqrt(510) = 481): uniform bytes
    pass it except with a probability far below 1e-12, a stuck bit or a value mapped twice
    fails it by thousands."""
    async with _client() as client:
        await _push(client, os.urandom(60 * 1024))
        counts: Counter[int] = Counter()
        for i in range(60):
            url = f"{LEGACY}?length=1024&type=uint8" if i % 2 else "/?length=1024&type=uint8"
            counts.update((await client.get(url, headers=X_API_KEY)).json()["data"])
    n = sum(counts.values())
    assert n == 61_440
    assert set(counts) <= set(range(256))
    expected = n / 256
    chi_square = sum((counts[v] - expected) ** 2 / expected for v in range(256))
    assert chi_square < 255 + 10 * math.sqrt(2 * 255), chi_square


@pytest.mark.anyio
async def test_the_byte_budget_is_charged_what_each_request_draws() -> None:
    """QRNG_BYTE_RATE_LIMIT counts ANU requests like the rest: 4096 bytes of hex strings
    spend a 4096-byte budget, and the same again at once is a 429 that takes nothing."""
    async with _client(QRNG_BYTE_RATE_LIMIT="4096") as client:
        await _push(client, os.urandom(16_384))
        ok = await client.get("/?length=512&type=hex16&size=4", headers=X_API_KEY)
        assert ok.status_code == 200, ok.text
        assert '"bytes";r=' in ok.headers["ratelimit"]  # r itself refills as time passes
        available = (await _status(client))["buffer_bytes_available"]
        again = f"{LEGACY}?length=4&type=hex16&size=1024"  # the whole budget again
        assert _problem(await client.get(again, headers=X_API_KEY), 429)
        assert (await _status(client))["buffer_bytes_available"] == available


# (headers, query key, status): the bearer token first, then x-api-key, then ?api_key=.
_AUTH = [
    (X_API_KEY, None, 200),
    ({"x-api-key": OTHER_KEY}, None, 200),
    ({"X-API-Key": API_KEY}, None, 200),  # header names are case-insensitive
    ({"x-api-key": WRONG_KEY}, None, 401),
    ({}, None, 401),
    ({"x-api-key": ""}, None, 401),
    ({"x-api-key": WRONG_KEY, **BEARER}, None, 200),  # the bearer token wins
    ({"x-api-key": API_KEY, "Authorization": f"Bearer {WRONG_KEY}"}, None, 401),  # not rescued
    ({"x-api-key": API_KEY, "Authorization": "Basic dXNlcjpwdw=="}, None, 200),  # e.g. .netrc
    ({"x-api-key": API_KEY}, WRONG_KEY, 200),  # the header wins over the query
    ({"x-api-key": WRONG_KEY}, API_KEY, 401),  # and is not rescued by it
    ({}, API_KEY, 200),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "query_key", "status"), _AUTH)
@pytest.mark.parametrize("path", ["/", LEGACY, "/api/random"])
async def test_an_x_api_key_header_is_a_key_like_the_others(
    path: str, headers: dict[str, str], query_key: str | None, status: int
) -> None:
    async with _client() as client:
        await _push(client, os.urandom(64))
        query = {"length": "1", "type": "uint8", "bytes": "1"}
        if query_key is not None:
            query["api_key"] = query_key
        response = await client.get(path, params=query, headers=headers)
        if status == 401:
            assert "API key" in _problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        else:
            assert response.status_code == 200, response.text


# (query, the parameter the 400 names); the first two routes' limits are ANU's.
_BAD = [
    ("type=uint8", "'length'"),
    ("length=&type=uint8", "'length'"),
    ("length=0&type=uint8", "'length'"),
    ("length=1025&type=uint8", "'length'"),
    ("length=-1&type=uint8", "'length'"),
    ("length=ten&type=uint8", "'length'"),
    ("length=1.5&type=uint8", "'length'"),
    ("length=1&type=", "'type'"),
    ("length=1&type=UINT8", "'type'"),
    ("length=1&type=int32", "'type'"),
    ("length=1&type=hex16&size=0", "'size'"),
    ("length=1&type=hex16&size=x", "'size'"),
    ("length=1&type=uint8&size=-3", "'size'"),  # checked even where it does not count
]
_BAD_LEGACY = [("length=1&type=hex8", "'type'"), ("length=1&type=hex16&size=1025", "'size'")]
_BAD_AQN = [("length=1&type=hex16&size=11", "'size'"), ("length=1&type=string", "'type'")]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "word"),
    [(f"{LEGACY}?{q}", w) for q, w in _BAD + _BAD_LEGACY]
    + [(f"/?{q}", w) for q, w in _BAD + _BAD_AQN],
)
async def test_every_bad_parameter_is_a_400_naming_it_and_takes_nothing(
    url: str, word: str
) -> None:
    async with _client() as client:
        await _push(client, os.urandom(4096))
        before = await _status(client)
        assert word in _problem(await client.get(url, headers=X_API_KEY), 400)
        after = await _status(client)
        assert after["buffer_bytes_available"] == before["buffer_bytes_available"]
        assert after["total_bytes_served"] == before["total_bytes_served"]


@pytest.mark.anyio
async def test_a_request_the_pool_can_never_hold_is_a_400_not_a_503() -> None:
    """On a 64 KiB pool, 1024 strings of 1024 bytes would wait for entropy forever."""
    async with _client(QRNG_BUFFER_SIZE="65536") as client:
        await _push(client, os.urandom(65_536))
        detail = _problem(
            await client.get(f"{LEGACY}?length=1024&type=hex16&size=1024", headers=X_API_KEY), 400
        )
        assert "'length'" in detail
        assert "'size'" in detail
        assert "65536" in detail
        assert (await _status(client))["buffer_bytes_available"] == 65_536
        fits = await client.get(f"{LEGACY}?length=64&type=hex16&size=1024", headers=X_API_KEY)
        assert fits.status_code == 200, fits.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prefix", "served", "not_served"),
    [
        (None, ["/"], ["/anu", "/anu/"]),
        ("", ["/"], ["/anu/"]),
        ("/anu", ["/anu", "/anu/"], ["/", "/anu//", "/anux"]),
        ("/qrng/anu", ["/qrng/anu", "/qrng/anu/"], ["/", "/anu", "/qrng"]),
    ],
)
async def test_the_aqn_api_is_served_at_its_prefix(
    prefix: str | None, served: list[str], not_served: list[str]
) -> None:
    """Root by default, so an AQN client only swaps its base URL; QRNG_ANU_PREFIX moves it
    (with or without the trailing slash, as clients build the URL either way). The legacy
    path stays where quantumrandom looks for it."""
    env = {} if prefix is None else {"QRNG_ANU_PREFIX": prefix}
    async with _client(**env) as client:
        await _push(client, os.urandom(4096))
        for path in served:
            response = await client.get(f"{path}?length=2&type=uint8", headers=X_API_KEY)
            assert response.status_code == 200, (path, response.text)
            assert response.json()["length"] == "2"
        for path in not_served:
            response = await client.get(f"{path}?length=2&type=uint8", headers=X_API_KEY)
            assert _problem(response, 404), path
        legacy = await client.get(f"{LEGACY}?length=2&type=uint8", headers=X_API_KEY)
        assert legacy.json()["length"] == 2


@pytest.mark.parametrize(
    "value", ["anu", "/anu/", "/", "//anu", "/anu//x", "/a n u", "/anu?x=1", "/anu#x", "/..", "/é"]
)
def test_a_bad_prefix_is_one_line_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        _settings(QRNG_ANU_PREFIX=value)
    text = str(err.value)
    assert text.startswith("QRNG_ANU_PREFIX: must be empty or a path like /anu")
    assert "\n" not in text


@pytest.mark.anyio
@pytest.mark.parametrize(("prefix", "path"), [("", "/"), ("/anu", "/anu/")])
async def test_the_openapi_document_describes_both_apis(prefix: str, path: str) -> None:
    """Both routes, at the paths served, with ANU's limits and types."""
    async with _client(QRNG_ANU_PREFIX=prefix) as client:
        document = (await client.get("/openapi.json")).json()
    for route, types, max_size in [
        (LEGACY, ["uint8", "uint16", "hex16"], 1024),
        (path, ["uint8", "uint16", "hex8", "hex16"], 10),
    ]:
        operation = document["paths"][route]["get"]
        schemas = {p["name"]: p for p in operation["parameters"]}
        assert schemas["length"]["required"] is True
        assert (schemas["length"]["schema"]["minimum"], schemas["length"]["schema"]["maximum"]) == (
            1,
            1024,
        )
        assert schemas["type"]["schema"]["enum"] == types
        assert schemas["size"]["schema"]["maximum"] == max_size
        assert operation["security"]
        assert set(operation["responses"]) >= {"200", "400", "401", "429", "503"}
    assert "/" not in document["paths"] or path == "/"
