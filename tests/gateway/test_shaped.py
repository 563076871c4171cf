"""The shape routes over HTTP: what each answers, every bad parameter a 400 that names it and
takes nothing, the byte budget charged like every route, and each one in /openapi.json."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from qrng_dd.gateway.shaped import ALPHANUMERIC, CHARSETS
from tests.gateway.test_front import BEARER, _available, _client, _fill, _problem

_OK: list[tuple[str, Any]] = [
    ("/api/gaussians?count=5&mean=-3.5&stddev=0.25", None),
    ("/api/gaussians?count=3&stddev=0", [0.0, 0.0, 0.0]),
    ("/api/strings?count=4&length=7", None),
    ("/api/strings?count=2&length=5&alphabet=x", ["xxxxx", "xxxxx"]),
    ("/api/shuffle?items=a,b,c,d", None),
    ("/api/shuffle?items=solo", ["solo"]),
    ("/api/sample?n=49&k=6", None),
    ("/api/sample?n=1&k=1", [1]),
    ("/api/dice?notation=3d6%2B2", None),
    ("/api/dice", None),
    ("/api/passwords?count=2&length=12&charset=hex", None),
]

# (url, the parameter the 400 must name)
_BAD = [
    ("/api/gaussians?count=0", "'count'"),
    ("/api/gaussians?mean=abc", "'mean'"),
    ("/api/gaussians?mean=nan", "'mean'"),
    ("/api/gaussians?mean=inf", "'mean'"),
    ("/api/gaussians?mean=1e7", "'mean'"),
    ("/api/gaussians?stddev=-1", "'stddev'"),
    ("/api/gaussians?stddev=", "'stddev'"),
    ("/api/gaussians?stddev=" + "1" * 50, "'stddev'"),
    ("/api/strings?length=0", "'length'"),
    ("/api/strings?length=1025", "'length'"),
    ("/api/strings?count=1000&length=1000", "'count' times 'length'"),
    ("/api/strings?alphabet=", "'alphabet'"),
    ("/api/strings?alphabet=aab", "'alphabet'"),
    ("/api/strings?alphabet=" + "x" * 257, "'alphabet'"),
    ("/api/shuffle", "'items'"),
    ("/api/shuffle?items=", "'items'"),
    ("/api/shuffle?items=" + "a," * 1000 + "a", "'items'"),
    ("/api/sample", "'n'"),
    ("/api/sample?n=0", "'n'"),
    ("/api/sample?n=5&k=6", "'k'"),
    ("/api/sample?n=10&k=-1", "'k'"),
    ("/api/sample?n=" + "9" * 20, "'n'"),
    ("/api/dice?notation=", "'notation'"),
    ("/api/dice?notation=3x6", "'notation'"),
    ("/api/dice?notation=0d6", "'notation'"),
    ("/api/dice?notation=3d1", "'notation'"),
    ("/api/dice?notation=1001d6", "'notation'"),
    ("/api/dice?notation=1d6%2B9999999", "'notation'"),
    ("/api/dice?notation=" + "1" * 40, "'notation'"),
    ("/api/passwords?length=7", "'length'"),
    ("/api/passwords?count=101", "'count'"),
    ("/api/passwords?charset=emoji", "'charset'"),
    ("/api/integers?min=5&max=4", "'min'"),
]


@pytest.mark.anyio
async def test_each_shape_answers_what_it_promises() -> None:
    async with _client() as client:
        await _fill(client, 60_000)
        answers = {}
        for url, expected in _OK:
            response = await client.get(url, headers=BEARER)
            assert response.status_code == 200, (url, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.headers["cache-control"] == "no-store"
            answers[url] = response.json()
            if expected is not None:
                assert answers[url] == expected, url
    gaussians = answers[_OK[0][0]]
    assert len(gaussians) == 5
    assert all(isinstance(v, float) for v in gaussians)
    strings = answers[_OK[2][0]]
    assert len(strings) == 4
    assert all(re.fullmatch("[A-Za-z0-9]{7}", s) for s in strings)
    assert sorted(answers[_OK[4][0]]) == ["a", "b", "c", "d"]
    sample = answers[_OK[6][0]]
    assert len(set(sample)) == 6
    assert all(1 <= v <= 49 for v in sample)
    roll = answers[_OK[8][0]]
    assert roll["notation"] == "3d6+2"
    assert roll["modifier"] == 2
    assert len(roll["rolls"]) == 3
    assert all(1 <= r <= 6 for r in roll["rolls"])
    assert roll["total"] == sum(roll["rolls"]) + 2
    assert len(answers["/api/dice"]["rolls"]) == 1
    passwords = answers[_OK[10][0]]
    assert passwords["charset"] == "hex"
    assert [len(p) for p in passwords["passwords"]] == [12, 12]
    assert all(set(p) <= set(CHARSETS["hex"]) for p in passwords["passwords"])
    assert passwords["entropy_bits"] == 48.0


@pytest.mark.anyio
async def test_every_bad_parameter_is_a_400_naming_it_and_takes_nothing() -> None:
    async with _client() as client:
        await _fill(client, 8192)
        for url, word in _BAD:
            before = await _available(client)
            response = await client.get(url, headers=BEARER)
            assert word in _problem(response, 400)["detail"], url
            assert await _available(client) == before, url


@pytest.mark.anyio
async def test_shapes_need_a_key_and_charge_the_byte_budget() -> None:
    """Without a key, 401; with a byte budget of 100/s, 8 strings of 12 characters (96
    bytes) pass and 8 of 13 more (104 bytes) are over it: 429 and nothing drawn."""
    async with _client(QRNG_BYTE_RATE_LIMIT="100") as client:
        await _fill(client, 8192)
        assert (await client.get("/api/dice")).status_code == 401
        first = await client.get("/api/strings?count=8&length=12", headers=BEARER)
        assert first.status_code == 200
        before = await _available(client)
        response = await client.get("/api/strings?count=8&length=13", headers=BEARER)
        assert _problem(response, 429)["detail"]
        assert await _available(client) == before


@pytest.mark.anyio
async def test_short_of_entropy_is_a_503_that_takes_nothing() -> None:
    async with _client() as client:
        await _fill(client, 64)
        response = await client.get("/api/gaussians?count=100", headers=BEARER)
        assert _problem(response, 503)["detail"]
        assert response.headers["retry-after"]
        assert await _available(client) == 64


@pytest.mark.anyio
async def test_the_shapes_are_in_the_openapi_document_with_their_limits() -> None:
    async with _client() as client:
        document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for name in ("gaussians", "strings", "shuffle", "sample", "dice", "passwords"):
        assert f"/api/{name}" in paths, name
    params = {p["name"]: p["schema"] for p in paths["/api/gaussians"]["get"]["parameters"]}
    assert params["mean"] == {"type": "number", "minimum": -1_000_000, "maximum": 1_000_000,
                              "default": 0}  # fmt: skip
    params = {p["name"]: p["schema"] for p in paths["/api/strings"]["get"]["parameters"]}
    assert params["alphabet"]["maxLength"] == 256
    assert params["alphabet"]["default"] == ALPHANUMERIC


def test_password_entropy_is_length_times_log2_of_the_charset() -> None:
    """What the answer's entropy_bits states for the default: 20 of 62 characters."""
    assert round(20 * math.log2(len(CHARSETS["alphanumeric"])), 1) == 119.1
