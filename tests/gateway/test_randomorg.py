"""RANDOM.ORG's JSON-RPC 4 basic API at ``POST /json-rpc/4/invoke``, in process: each
method's shape and ranges, every refusal as a JSON-RPC error naming its parameter and taking
nothing, the one policy's keys and limits, exact byte accounting, and uniformity."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import string
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import httpx
import pytest

from qrng_dd.config import GatewaySettings
from qrng_dd.gateway.compat.randomorg import MAX_BODY, SHORT_OF_ENTROPY, UNLIMITED
from qrng_dd.gateway.server import build_app
from qrng_dd.gateway.service import EntropyService
from qrng_dd.wire.packet import PacketKey
from tests.conftest import KEY_HEX
from tests.support.gateway import API_KEY, OTHER_KEY, gateway_settings, make_raw

URL = "/json-rpc/4/invoke"
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
ALPHANUMERIC = string.ascii_uppercase + string.ascii_lowercase + string.digits
_DROP = object()  # a parameter left out


def _settings(**env: str) -> GatewaySettings:
    return gateway_settings({"QRNG_BUFFER_SIZE": "1048576", **env})


class Gateway:
    """An in-process gateway: its HTTP client and, to count what was taken, its service."""

    def __init__(self, client: httpx.AsyncClient, service: EntropyService) -> None:
        self.client = client
        self.service = service

    async def fill(self, total: int) -> None:
        key = PacketKey.from_hex(KEY_HEX)
        while total > 0:
            size = min(65_536, total)
            response = await self.client.post("/push", content=make_raw(key, os.urandom(size)))
            assert response.status_code == 200, response.text
            total -= size

    async def post(self, body: Any, **kwargs: Any) -> dict[str, Any]:
        """POST a JSON value (ASCII, so a lone surrogate can be sent) or raw bytes; the
        answer must be HTTP 200 JSON-RPC."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode("ascii")
        headers = {"Content-Type": "application/json"}
        response = await self.client.post(URL, content=content, headers=headers, **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        answer: dict[str, Any] = response.json()
        assert answer["jsonrpc"] == "2.0"
        self.last = response
        return answer

    async def call(self, method: str, params: dict[str, Any], key: str = API_KEY) -> Any:
        """A request with ``apiKey`` set; returns the whole answer."""
        body = {"jsonrpc": "2.0", "method": method, "params": {"apiKey": key, **params}, "id": 42}
        answer = await self.post(body)
        assert answer["id"] == 42
        return answer

    async def result(self, method: str, **params: Any) -> dict[str, Any]:
        answer = await self.call(method, params)
        assert "error" not in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    async def error(self, method: str, params: dict[str, Any], key: str = API_KEY) -> Any:
        """The error of a refused request; asserts it took nothing from the pool."""
        taken = self.service.pool.taken_total
        answer = await self.call(method, params, key)
        assert "result" not in answer, answer
        assert self.service.pool.taken_total == taken
        return answer["error"]


@contextlib.asynccontextmanager
async def _gateway(**env: str) -> AsyncIterator[Gateway]:
    service = EntropyService(_settings(**env))
    transport = httpx.ASGITransport(app=build_app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield Gateway(client, service)


def _check_answer(result: dict[str, Any]) -> list[Any]:
    """RANDOM.ORG's answer to a generate method; returns its data."""
    assert set(result) == {"random", "bitsUsed", "bitsLeft", "requestsLeft", "advisoryDelay"}
    assert set(result["random"]) == {"data", "completionTime"}
    assert TIME.fullmatch(result["random"]["completionTime"])
    assert result["bitsUsed"] > 0
    assert result["bitsUsed"] % 8 == 0
    assert result["bitsLeft"] == UNLIMITED  # no byte budget configured
    assert 0 < result["requestsLeft"] <= 200_000
    assert result["advisoryDelay"] == 0
    data: list[Any] = result["random"]["data"]
    return data


def _ints(values: list[Any], low: int, high: int) -> bool:
    return all(type(v) is int and low <= v <= high for v in values)


def _in_base(values: list[Any], base: int, low: int, high: int) -> bool:
    digits = {2: "01", 8: "01234567", 16: "0123456789abcdef"}[base]
    return all(
        isinstance(v, str) and set(v.lstrip("-")) <= set(digits) and low <= int(v, base) <= high
        for v in values
    )


def _decimals(values: list[Any], places: int) -> bool:
    scale = 10**places
    return all(0 <= v < 1 and abs(v * scale - round(v * scale)) < 1e-6 for v in values)


def _uuid4(value: str) -> bool:
    parsed = uuid.UUID(value)
    return str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


# (method, params, check of the data)
_SHAPES: list[tuple[str, dict[str, Any], Callable[[list[Any]], bool]]] = [
    ("generateIntegers", {"n": 50, "min": -5, "max": 5},
     lambda d: len(d) == 50 and _ints(d, -5, 5)),
    ("generateIntegers", {"n": 100, "min": 1, "max": 100, "replacement": False},
     lambda d: sorted(d) == list(range(1, 101))),
    ("generateIntegers", {"n": 9, "min": 10**9 - 8, "max": 10**9, "replacement": False},
     lambda d: sorted(d) == list(range(10**9 - 8, 10**9 + 1))),
    ("generateIntegers", {"n": 30, "min": 0, "max": 10**9, "base": 16},
     lambda d: len(d) == 30 and _in_base(d, 16, 0, 10**9)),
    ("generateIntegers", {"n": 30, "min": -(10**9), "max": -1, "base": 8},
     lambda d: _in_base(d, 8, -(10**9), -1) and all(v.startswith("-") for v in d)),
    ("generateIntegers", {"n": 16, "min": 0, "max": 15, "base": 2, "replacement": False},
     lambda d: sorted(int(v, 2) for v in d) == list(range(16)) and _in_base(d, 2, 0, 15)),
    ("generateIntegers", {"n": 3, "min": 7, "max": 7}, lambda d: d == [7, 7, 7]),
    ("generateIntegerSequences", {"n": 4, "length": 5, "min": 1, "max": 6},
     lambda d: len(d) == 4 and all(len(s) == 5 and _ints(s, 1, 6) for s in d)),
    ("generateIntegerSequences",
     {"n": 3, "length": [1, 10, 4], "min": [0, 10, 100], "max": [9, 19, 199],
      "replacement": [True, False, False], "base": [10, 10, 16]},
     lambda d: [len(s) for s in d] == [1, 10, 4] and _ints(d[0], 0, 9)
     and sorted(d[1]) == list(range(10, 20))
     and len(set(d[2])) == 4 and _in_base(d[2], 16, 100, 199)),
    ("generateDecimalFractions", {"n": 200, "decimalPlaces": 3},
     lambda d: len(d) == 200 and _decimals(d, 3)),
    ("generateDecimalFractions", {"n": 10, "decimalPlaces": 1, "replacement": False},
     lambda d: sorted(d) == [k / 10 for k in range(10)]),
    ("generateDecimalFractions", {"n": 50, "decimalPlaces": 14},
     lambda d: len(d) == 50 and all(0 <= v < 1 for v in d)),
    ("generateGaussians", {"n": 1000, "mean": 10, "standardDeviation": 2, "significantDigits": 4},
     # The mean of 1000 is within 8 of its standard deviations (2 / sqrt(1000)) of 10.
     lambda d: abs(sum(d) / 1000 - 10) < 0.51 and all(float(f"{v:.3e}") == v for v in d)),
    ("generateGaussians", {"n": 5, "mean": -3.5, "standardDeviation": 0, "significantDigits": 2},
     lambda d: d == [-3.5] * 5),
    ("generateStrings", {"n": 20, "length": 8, "characters": "ab"},
     lambda d: len(d) == 20 and all(len(s) == 8 and set(s) <= {"a", "b"} for s in d)),
    ("generateStrings", {"n": 8, "length": 3, "characters": "ab", "replacement": False},
     lambda d: sorted(d) == sorted({a + b + c for a in "ab" for b in "ab" for c in "ab"})),
    ("generateStrings",  # 128^32 strings: too many to index, so repeats are drawn again
     {"n": 50, "length": 32, "characters": "".join(map(chr, range(200, 328))),
      "replacement": False},
     lambda d: len(set(d)) == 50 and all(len(s) == 32 and min(s) > "\u00c7" for s in d)),
    ("generateStrings", {"n": 5, "length": 1, "characters": "\u00e9\u4e2d\U0001f600"},
     lambda d: set(d) <= {"\u00e9", "\u4e2d", "\U0001f600"}),
    ("generateUUIDs", {"n": 10}, lambda d: len(set(d)) == 10 and all(map(_uuid4, d))),
    ("generateBlobs", {"n": 3, "size": 24},
     lambda d: len(d) == 3 and all(len(base64.b64decode(b, validate=True)) == 3 for b in d)),
    ("generateBlobs", {"n": 2, "size": 16, "format": "hex"},
     lambda d: len(d) == 2 and all(re.fullmatch("[0-9a-f]{4}", b) for b in d)),
    ("generateBlobs", {"n": 1, "size": 1_048_576},
     lambda d: len(base64.b64decode(d[0])) == 131_072),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "params", "check"), _SHAPES)
async def test_each_method_answers_in_shape_and_range(
    method: str, params: dict[str, Any], check: Callable[[list[Any]], bool]
) -> None:
    """The data RANDOM.ORG would give, with its usage fields; ``bitsUsed`` is what the pool
    lost, and the answer is no-store with the key's RateLimit fields."""
    async with _gateway() as gw:
        await gw.fill(200_000)
        taken = gw.service.pool.taken_total
        result = await gw.result(method, **params)
        data = _check_answer(result)
        assert check(data), data
        assert result["bitsUsed"] == 8 * (gw.service.pool.taken_total - taken)
        assert gw.last.headers["cache-control"] == "no-store"
        assert gw.last.headers["ratelimit"].startswith('"requests";r=')


@pytest.mark.anyio
async def test_get_usage_draws_nothing_and_counts_what_the_key_was_served() -> None:
    """``bitsLeft`` is the key's byte budget (8 bytes a second here, so the debt of 1,600
    bytes served takes minutes to pay back); totals are kept per key."""
    async with _gateway(QRNG_BYTE_RATE_LIMIT="8") as gw:
        await gw.fill(10_000)
        first = await gw.result("getUsage")
        served = await gw.result("generateUUIDs", n=100)
        taken = gw.service.pool.taken_total
        usage = await gw.result("getUsage")
        assert gw.service.pool.taken_total == taken
        assert set(usage) == {"status", "creationTime", "bitsLeft", "requestsLeft",
                              "totalBits", "totalRequests", "advisoryDelay"}  # fmt: skip
        assert usage["status"] == "running"
        assert TIME.fullmatch(usage["creationTime"])
        assert (first["bitsLeft"], first["totalBits"], first["totalRequests"]) == (64, 0, 0)
        assert (usage["totalBits"], usage["totalRequests"]) == (served["bitsUsed"], 1)
        assert served["bitsUsed"] == 100 * 128
        assert usage["bitsLeft"] == served["bitsLeft"] == 0
        assert usage["advisoryDelay"] == 0
        other = await gw.call("getUsage", {}, OTHER_KEY)
        assert (other["result"]["totalBits"], other["result"]["bitsLeft"]) == (0, 64)


@pytest.mark.anyio
async def test_the_bits_used_add_up_to_the_bytes_served() -> None:
    """Every method: the sum of ``bitsUsed`` is eight times what ``/api/status`` says the
    pool served, request for request."""
    async with _gateway() as gw:
        await gw.fill(500_000)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        before = (await gw.client.get("/api/status", headers=headers)).json()
        bits = 0
        for method, params, _ in _SHAPES:
            bits += (await gw.result(method, **params))["bitsUsed"]
        await gw.error("generateIntegers", {"n": 0, "min": 1, "max": 6})
        after = (await gw.client.get("/api/status", headers=headers)).json()
        assert bits == 8 * (after["total_bytes_served"] - before["total_bytes_served"])
        assert after["total_requests_served"] - before["total_requests_served"] == len(_SHAPES)


# -- refusals -----------------------------------------------------------------------------------

_VALID: dict[str, dict[str, Any]] = {
    "generateIntegers": {"n": 5, "min": 1, "max": 6},
    "generateIntegerSequences": {"n": 3, "length": 2, "min": 1, "max": 6},
    "generateDecimalFractions": {"n": 5, "decimalPlaces": 2},
    "generateGaussians": {"n": 5, "mean": 0, "standardDeviation": 1, "significantDigits": 6},
    "generateStrings": {"n": 5, "length": 4, "characters": "abcd"},
    "generateUUIDs": {"n": 5},
    "generateBlobs": {"n": 2, "size": 64},
    "getUsage": {},
}

# (method, changes to its valid parameters, code, the parameter the message must name)
_BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("generateIntegers", {"n": _DROP}, -32602, "n"),
    ("generateIntegers", {"n": "5"}, 200, "n"),
    ("generateIntegers", {"n": True}, 200, "n"),
    ("generateIntegers", {"n": 2.5}, 200, "n"),
    ("generateIntegers", {"n": None}, 200, "n"),
    ("generateIntegers", {"n": [5]}, 200, "n"),
    ("generateIntegers", {"n": 0}, 202, "n"),
    ("generateIntegers", {"n": -1}, 202, "n"),
    ("generateIntegers", {"n": 10_001}, 202, "n"),
    ("generateIntegers", {"n": 10**40}, 202, "n"),
    ("generateIntegers", {"min": -(10**9) - 1}, 202, "min"),
    ("generateIntegers", {"max": 1e10}, 202, "max"),
    ("generateIntegers", {"max": _DROP}, -32602, "max"),
    ("generateIntegers", {"min": 7, "max": 6}, 300, "min"),
    ("generateIntegers", {"replacement": "false"}, 200, "replacement"),
    ("generateIntegers", {"replacement": 0}, 200, "replacement"),
    ("generateIntegers", {"n": 7, "replacement": False}, 301, "n"),
    ("generateIntegers", {"base": 3}, 202, "base"),
    ("generateIntegers", {"base": "16"}, 200, "base"),
    ("generateIntegers", {"pregeneratedRandomization": {"date": "2024-01-01"}}, -32602,
     "pregeneratedRandomization"),
    ("generateIntegers", {"Min": 1}, -32602, "Min"),
    ("generateIntegerSequences", {"n": 1001}, 202, "n"),
    ("generateIntegerSequences", {"length": [1, 2]}, 200, "length"),
    ("generateIntegerSequences", {"length": []}, 200, "length"),
    ("generateIntegerSequences", {"length": {"a": 1}}, 200, "length"),
    ("generateIntegerSequences", {"length": 0}, 202, "length"),
    ("generateIntegerSequences", {"length": [5000, 5000, 1]}, 202, "length"),
    ("generateIntegerSequences", {"n": 2, "length": 5001}, 202, "length"),
    ("generateIntegerSequences", {"min": [1, "2", 3]}, 200, "min"),
    ("generateIntegerSequences", {"max": [6, 6]}, 200, "max"),
    ("generateIntegerSequences", {"min": [1, 1, 9]}, 300, "min"),
    ("generateIntegerSequences", {"replacement": [True, 1, True]}, 200, "replacement"),
    ("generateIntegerSequences", {"base": [10, 10, 7]}, 202, "base"),
    ("generateIntegerSequences", {"length": 7, "replacement": False}, 301, "length"),
    ("generateDecimalFractions", {"decimalPlaces": 0}, 202, "decimalPlaces"),
    ("generateDecimalFractions", {"decimalPlaces": 15}, 202, "decimalPlaces"),
    ("generateDecimalFractions", {"decimalPlaces": _DROP}, -32602, "decimalPlaces"),
    ("generateDecimalFractions", {"decimalPlaces": "2"}, 200, "decimalPlaces"),
    ("generateDecimalFractions", {"n": 11, "decimalPlaces": 1, "replacement": False}, 301, "n"),
    ("generateGaussians", {"mean": 1_000_001}, 202, "mean"),
    ("generateGaussians", {"mean": "0"}, 200, "mean"),
    ("generateGaussians", {"standardDeviation": -1_000_000.5}, 202, "standardDeviation"),
    ("generateGaussians", {"standardDeviation": None}, 200, "standardDeviation"),
    ("generateGaussians", {"significantDigits": 1}, 202, "significantDigits"),
    ("generateGaussians", {"significantDigits": 15}, 202, "significantDigits"),
    ("generateGaussians", {"significantDigits": _DROP}, -32602, "significantDigits"),
    ("generateStrings", {"length": 33}, 202, "length"),
    ("generateStrings", {"length": 0}, 202, "length"),
    ("generateStrings", {"characters": ""}, 202, "characters"),
    ("generateStrings", {"characters": "x" * 129}, 202, "characters"),
    ("generateStrings", {"characters": 5}, 200, "characters"),
    ("generateStrings", {"characters": ["a", "b"]}, 200, "characters"),
    ("generateStrings", {"characters": "abca"}, 201, "characters"),
    ("generateStrings", {"characters": "ab\ud800"}, 201, "characters"),
    ("generateStrings", {"chars": "abc", "characters": _DROP}, -32602, "characters"),
    ("generateStrings", {"length": 2, "characters": "ab", "replacement": False}, 301, "n"),
    ("generateUUIDs", {"n": 1001}, 202, "n"),
    ("generateUUIDs", {"n": 0}, 202, "n"),
    ("generateBlobs", {"n": 101}, 202, "n"),
    ("generateBlobs", {"size": 12}, 202, "size"),
    ("generateBlobs", {"size": 0}, 202, "size"),
    ("generateBlobs", {"size": 1_048_584}, 202, "size"),
    ("generateBlobs", {"n": 2, "size": 1_048_576}, 202, "size"),
    ("generateBlobs", {"format": "binary"}, 202, "format"),
    ("generateBlobs", {"format": 16}, 200, "format"),
    ("getUsage", {"n": 1}, -32602, "n"),
]  # fmt: skip


def _params(method: str, changes: dict[str, Any]) -> dict[str, Any]:
    params = {**_VALID[method], **changes}
    return {name: value for name, value in params.items() if value is not _DROP}


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "changes", "code", "name"), _BAD)
async def test_every_bad_parameter_is_an_error_naming_it_that_takes_nothing(
    method: str, changes: dict[str, Any], code: int, name: str
) -> None:
    async with _gateway() as gw:
        await gw.fill(4096)
        error = await gw.error(method, _params(method, changes))
        assert error["code"] == code, error
        assert f"'{name}'" in error["message"], error
        assert set(error) == {"code", "message", "data"}


def test_the_refusal_table_covers_every_method() -> None:
    """Each row changes one thing of a valid request (answered, as the next test shows)."""
    assert {method for method, *_ in _BAD} == set(_VALID)


@pytest.mark.anyio
@pytest.mark.parametrize("method", list(_VALID))
async def test_the_valid_requests_the_table_starts_from_are_answered(method: str) -> None:
    async with _gateway() as gw:
        await gw.fill(4096)
        assert "result" in await gw.call(method, _VALID[method])


@pytest.mark.anyio
async def test_a_number_json_reads_as_infinity_is_out_of_range() -> None:
    async with _gateway() as gw:
        await gw.fill(4096)
        body = (
            b'{"jsonrpc":"2.0","method":"generateGaussians","id":1,"params":{"apiKey":"'
            + API_KEY.encode()
            + b'","n":3,"mean":1e999,"standardDeviation":1,"significantDigits":5}}'
        )
        error = (await gw.post(body))["error"]
        assert (error["code"], "'mean'" in error["message"]) == (202, True)


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["wrong-key-0000000000", "", API_KEY.upper()])
async def test_a_key_that_is_not_ours_is_error_400(key: str) -> None:
    """RANDOM.ORG's 'key does not exist' (rdoclient's RandomOrgKeyNonExistentError); an
    answer to nobody carries no RateLimit fields."""
    async with _gateway() as gw:
        await gw.fill(4096)
        error = await gw.error("generateIntegers", _VALID["generateIntegers"], key)
        assert error["code"] == 400
        assert "'apiKey'" in error["message"]
        assert "ratelimit" not in gw.last.headers


@pytest.mark.anyio
@pytest.mark.parametrize(("params", "code"), [({}, -32602), ({"apiKey": 12345}, 200)])
async def test_a_missing_or_malformed_key_names_apikey(params: dict[str, Any], code: int) -> None:
    async with _gateway() as gw:
        answer = await gw.post({"jsonrpc": "2.0", "method": "getUsage", "params": params, "id": 1})
        assert answer["error"]["code"] == code
        assert "'apiKey'" in answer["error"]["message"]


# (body, code, id answered)
_ENVELOPES: list[tuple[Any, int, Any]] = [
    (b"{not json", -32700, None),
    (b"", -32700, None),
    (b'{"jsonrpc":"2.0","method":"getUsage","params":{},"id":NaN}', -32700, None),
    (b"\xff\xfe{}", -32700, None),
    (b"[" * 60_000, -32700, None),  # nested deeper than the parser recurses
    ([], -32600, None),
    ([{"jsonrpc": "2.0", "method": "getUsage", "params": {}, "id": 1}], -32600, None),
    ("a string", -32600, None),
    ({"method": "getUsage", "params": {}, "id": 1}, -32600, 1),
    ({"jsonrpc": "1.0", "method": "getUsage", "params": {}, "id": "x"}, -32600, "x"),
    ({"jsonrpc": "2.0", "method": "getUsage", "params": {}}, -32600, None),
    ({"jsonrpc": "2.0", "method": "getUsage", "params": {}, "id": {"a": 1}}, -32600, None),
    ({"jsonrpc": "2.0", "method": "getUsage", "params": {}, "id": True}, -32600, None),
    ({"jsonrpc": "2.0", "method": 5, "params": {}, "id": 2.5}, -32600, 2.5),
    ({"jsonrpc": "2.0", "method": "fooBar", "params": {}, "id": 18197}, -32601, 18197),
    ({"jsonrpc": "2.0", "method": "generateSignedIntegers", "params": {}, "id": 1}, -32601, 1),
    ({"jsonrpc": "2.0", "method": "getUsage", "id": None}, -32602, None),
    ({"jsonrpc": "2.0", "method": "getUsage", "params": [API_KEY], "id": "p"}, -32602, "p"),
    # Over 64 KiB: refused before it is parsed, so without its id.
    ({"jsonrpc": "2.0", "method": "generateStrings", "id": 3,
      "params": {"apiKey": API_KEY, "n": 1, "length": 1, "characters": "y" * MAX_BODY}},
     -32600, None),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "code", "request_id"), _ENVELOPES)
async def test_a_bad_envelope_is_a_json_rpc_error(body: Any, code: int, request_id: Any) -> None:
    """Parse error, invalid request, unknown method, params not an object: HTTP 200, the
    request's id when it had a valid one, null otherwise."""
    async with _gateway() as gw:
        answer = await gw.post(body)
        assert answer["error"]["code"] == code, answer
        assert answer["id"] == request_id
        if code == -32601:
            assert repr(body["method"]) in answer["error"]["message"]


@pytest.mark.anyio
async def test_a_body_over_the_limit_is_refused_as_it_streams() -> None:
    """Without a Content-Length the body is counted chunk by chunk, never buffered whole."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    async with _gateway() as gw:
        response = await gw.client.post(URL, content=chunks())
        assert response.status_code == 200
        assert response.json()["error"]["code"] == -32600


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("length", "code"),
    [(b"9" * 5000, -32600), (b"70000", -32600), (b"\xb2", -32700), (b"x", -32700)],
)
async def test_a_strange_content_length_is_never_a_500(length: bytes, code: int) -> None:
    """Straight to the ASGI app, past any server's own checks: 5000 digits (too many for
    int()), too large, and "\u00b2", which str.isdigit() accepts and int() does not."""
    app = build_app(EntropyService(_settings()))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    headers = [(b"content-length", length)]
    scope = {"type": "http", "method": "POST", "path": URL, "query_string": b"", "headers": headers}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["error"]["code"] == code


@pytest.mark.anyio
async def test_an_id_is_answered_as_sent() -> None:
    async with _gateway() as gw:
        for request_id in ["abc", "\u00e9\ud800", 0, -7, 1.5, None]:
            body = {"jsonrpc": "2.0", "method": "getUsage", "params": {"apiKey": API_KEY},
                    "id": request_id}  # fmt: skip
            answer = await gw.post(body)
            assert answer["id"] == request_id
            assert "result" in answer


@pytest.mark.anyio
async def test_only_post_is_served() -> None:
    async with _gateway() as gw:
        response = await gw.client.get(URL)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"


# -- limits and a short pool -------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_empty_request_bucket_is_error_402_and_asks_to_wait() -> None:
    """A request bucket of one that refills every 1000 s: the first answer says so in
    ``advisoryDelay``; the second is RANDOM.ORG's 'requests allowance exceeded'."""
    async with _gateway(QRNG_RATE_LIMIT="0.001", QRNG_RATE_BURST="1") as gw:
        await gw.fill(4096)
        result = await gw.result("generateUUIDs", n=1)
        assert (result["requestsLeft"], result["advisoryDelay"]) == (0, 1_000_000)
        error = await gw.error("generateUUIDs", {"n": 1})
        assert error["code"] == 402
        assert "'apiKey'" in error["message"]
        assert error["data"] == [1, 0]
        assert int(gw.last.headers["retry-after"]) >= 1
        assert "result" in await gw.call("getUsage", {})  # status costs no request


@pytest.mark.anyio
async def test_a_spent_byte_budget_is_error_403_with_the_bits_needed() -> None:
    """8 bytes a second: a first request of 16,000 bytes is served in debt (never refused
    forever), the next is RANDOM.ORG's 'bits allowance exceeded' and takes nothing."""
    async with _gateway(QRNG_BYTE_RATE_LIMIT="8") as gw:
        await gw.fill(40_000)
        first = await gw.result("generateUUIDs", n=1000)
        assert first["bitsLeft"] == 0
        error = await gw.error("generateUUIDs", {"n": 2})
        assert error["code"] == 403
        assert error["data"] == [256, 0]
        assert "'apiKey'" in error["message"]
        assert int(gw.last.headers["retry-after"]) >= 1000


@pytest.mark.anyio
async def test_a_short_pool_is_a_retry_hint_that_takes_nothing() -> None:
    async with _gateway() as gw:
        await gw.fill(100)
        error = await gw.error("generateIntegers", {"n": 20, "min": 1, "max": 6})
        assert error["code"] == SHORT_OF_ENTROPY
        assert error["data"]["retryAfter"] >= 1
        assert error["data"]["available"] == 100
        assert gw.last.headers["retry-after"] == str(error["data"]["retryAfter"])
        assert gw.service.pool.available == 100


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "params", "name"),
    [
        ("generateIntegers", {"n": 1000, "min": 1, "max": 6}, "n"),
        ("generateBlobs", {"n": 1, "size": 65_536}, "size"),
        ("generateIntegerSequences", {"n": 2, "length": 300, "min": 1, "max": 6}, "length"),
        # 4096 characters of 62 need 4096 bytes, but may read up to 4457 (bytes >= 248 are
        # drawn again): on a full pool of 4096 that would be "retry" forever too.
        ("generateStrings", {"n": 128, "length": 32, "characters": ALPHANUMERIC}, "n"),
    ],
)
async def test_a_request_the_pool_can_never_hold_is_out_of_range(
    method: str, params: dict[str, Any], name: str
) -> None:
    """Not a retry hint that could never come true: 202 naming the count."""
    async with _gateway(QRNG_BUFFER_SIZE="4096") as gw:
        await gw.fill(4096)
        error = await gw.error(method, params)
        assert (error["code"], f"'{name}'" in error["message"]) == (202, True), error


@pytest.mark.anyio
async def test_a_request_that_may_read_the_whole_pool_is_served_by_a_full_one() -> None:
    """117 strings of 32 characters of 62 may read up to 4078 bytes: a full pool of 4096
    serves them, charging and counting what was read."""
    async with _gateway(QRNG_BUFFER_SIZE="4096") as gw:
        await gw.fill(4096)
        params = {"n": 117, "length": 32, "characters": ALPHANUMERIC}
        result = await gw.result("generateStrings", **params)
        assert len(_check_answer(result)) == 117
        assert 117 * 32 <= result["bitsUsed"] // 8 == gw.service.pool.taken_total <= 4078


# -- uniformity ---------------------------------------------------------------------------------


def _chi_square_bound(cells: int) -> float:
    """Mean plus ten standard deviations of chi-square with ``cells - 1`` degrees of freedom:
    exceeded by chance far less than once in 10^12 runs."""
    dof = cells - 1
    return dof + 10 * math.sqrt(2 * dof)


def _chi_square(counts: Counter[Any], cells: list[Any], total: int) -> float:
    expected = total / len(cells)
    return sum((counts[cell] - expected) ** 2 / expected for cell in cells)


@pytest.mark.anyio
async def test_integers_over_a_range_not_a_power_of_two_are_uniform() -> None:
    """[-1e9, 5e8], 1.5e9 + 1 values: a 32-bit draw reduced modulo that would make the
    lowest 86 % of them 1.5 times as likely as the rest (a statistic near 440 here); 100
    equal cells see no such thing."""
    low, high = -1_000_000_000, 500_000_000
    async with _gateway() as gw:
        await gw.fill(400_000)
        values: list[int] = []
        for _ in range(3):
            answer = await gw.result("generateIntegers", n=10_000, min=low, max=high)
            values += _check_answer(answer)
    assert _ints(values, low, high)
    counts = Counter((v - low) * 100 // (high - low + 1) for v in values)
    assert _chi_square(counts, list(range(100)), len(values)) < _chi_square_bound(100)


@pytest.mark.anyio
async def test_strings_over_62_characters_are_uniform() -> None:
    """62 is no power of two either: a byte reduced modulo 62 would make 8 characters 1.25
    times as likely as the others (a statistic near 420); over 64,000 none is."""
    async with _gateway() as gw:
        await gw.fill(200_000)
        data = _check_answer(
            await gw.result("generateStrings", n=2000, length=32, characters=ALPHANUMERIC)
        )
    text = "".join(data)
    assert len(text) == 64_000
    counts = Counter(text)
    assert set(counts) <= set(ALPHANUMERIC)
    assert _chi_square(counts, list(ALPHANUMERIC), len(text)) < _chi_square_bound(62)
