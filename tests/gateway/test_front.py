"""The one ASGI front, made from the route table: dispatch, problems, lifespan, policy fields,
and the table as the single source of the OpenAPI document and the MCP tool schemas."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from qrng_dd.config import GatewaySettings
from qrng_dd.gateway.front import Front, _query
from qrng_dd.gateway.routes import BY_NAME, ROUTES
from qrng_dd.gateway.server import build_app
from qrng_dd.gateway.service import EntropyService
from qrng_dd.mcp.backends import ServiceBackend
from qrng_dd.mcp.tools import create_server
from qrng_dd.wire.packet import PacketKey
from tests.conftest import KEY_HEX
from tests.support.gateway import API_KEY, OTHER_KEY, asgi_client, gateway_settings, make_raw

BEARER = {"Authorization": f"Bearer {API_KEY}"}
PROBLEM = "application/problem+json"
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# (url, status, a word the problem's detail must contain)
_GETS = [
    ("/api/random", 200, ""),
    ("/api/random?bytes=5&encoding=base64", 200, ""),
    ("/api/random?bytes=7&encoding=binary", 200, ""),
    ("/api/random?bytes=4&bytes=9", 200, ""),
    ("/api/random?bytes=%2B3", 200, ""),
    ("/api/random?bytes=+3", 400, "'bytes'"),  # '+' is a space in a query
    ("/api/random?bytes=0", 400, "'bytes'"),
    ("/api/random?bytes=abc", 400, "'bytes'"),
    ("/api/random?bytes=65537", 400, "'bytes'"),
    ("/api/random?bytes=4&encoding=HEX", 400, "'encoding'"),
    ("/api/random?bytes=4&encoding=", 400, "'encoding'"),
    ("/api/random?bytes=", 400, "'bytes'"),
    ("/api/random?bytes", 400, "'bytes'"),
    ("/api/integers?count=5&min=-3&max=3", 200, ""),
    (f"/api/integers?count=4&min={INT64_MIN}&max={INT64_MAX}", 200, ""),
    ("/api/integers?min=10&max=9", 400, "'min'"),
    ("/api/integers?count=1001", 400, "'count'"),
    ("/api/integers?count=3&max=99999999999999999999", 400, "'max'"),
    ("/api/floats?count=3", 200, ""),
    ("/api/floats?count=0", 400, "'count'"),
    ("/api/floats?count=%32", 200, ""),
    ("/api/uuid?count=3", 200, ""),
    ("/api/uuid?count=101", 400, "'count'"),
    ("/api/uuid?count=2&other=%FF%20x", 200, ""),
    ("/api/uuid?&count=2&&", 200, ""),
    ("/api/uuid?=5&count=2&=&count", 400, "'count'"),
    ("/api/test/monte-carlo?iterations=10", 200, ""),
    # More points than the pool can ever hold: a 400 naming the parameter, never a 503.
    ("/api/test/monte-carlo?iterations=4097", 400, "'iterations'"),
    ("/api/test/randomness?bytes=65537", 400, "'bytes'"),
]
_AUTH = [
    ({}, "/api/random?bytes=4", 401),
    ({}, f"/api/random?bytes=4&api_key={OTHER_KEY}", 200),
    ({}, f"/api/random?bytes=4&api_key=wrong&api_key={API_KEY}", 200),  # the last one wins
    ({}, f"/api/random?bytes=4&api_key={API_KEY}&api_key=wrong", 401),
    (BEARER, "/api/random?bytes=4&api_key=wrong", 200),  # the header wins
    ({"Authorization": f"Basic {API_KEY}"}, "/api/uuid", 401),
    ({"Authorization": f"bearer   {API_KEY}  "}, "/api/uuid", 200),
    ({"Authorization": "Bearer wrong-key-0000000000"}, "/api/floats", 401),
    ({"Authorization": "Bearer"}, "/api/integers", 401),
]


def _settings(**env: str) -> GatewaySettings:
    return gateway_settings({"QRNG_ACCESS_LOG": "true", "QRNG_BUFFER_SIZE": "65536", **env})


def _client(**env: str) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(_settings(**env))


async def _fill(client: httpx.AsyncClient, total: int) -> None:
    key = PacketKey.from_hex(KEY_HEX)
    while total:
        size = min(4096, total)
        response = await client.post("/push", content=make_raw(key, os.urandom(size)))
        assert response.status_code == 200, response.text
        total -= size


async def _available(client: httpx.AsyncClient) -> int:
    value: int = (await client.get("/api/status", headers=BEARER)).json()["buffer_bytes_available"]
    return value


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://qrng-dd.invalid/problems/")
    return body


_QUERIES = ["", "a", "a=", "=a", "a=1&a=2", "&&a=1&", "a=b=c", "a=%41", "a+b=c+d", "a;b=1"]


@pytest.mark.parametrize("query", [*_QUERIES, "a=%FF&b=\xe9"])
def test_query_parsing_is_the_standard_one(query: str) -> None:
    """Blank values kept, the last repeated name wins, %-escapes and '+' decoded: exactly
    what Starlette (the reference reading of a query string) gives."""
    from starlette.datastructures import QueryParams

    raw = query.encode("latin-1")
    expected = QueryParams(raw)
    assert _query(raw) == {k: expected.get(k) for k in expected}


@pytest.mark.anyio
async def test_every_parameter_is_checked_before_anything_is_drawn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 400 names the parameter and takes nothing; every answer is logged once."""
    app = build_app(EntropyService(_settings()))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        await _fill(client, 60_000)
        for url, status, word in _GETS:
            before = await _available(client)
            app.flush_log()
            capsys.readouterr()
            response = await client.get(url, headers=BEARER)
            app.flush_log()
            logs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
            assert response.status_code == status, (url, response.text)
            assert [e["event"] for e in logs] == ["request"], url
            assert logs[0]["status"] == status
            if status == 400:
                assert word in _problem(response, 400)["detail"], url
                assert await _available(client) == before, url
            else:
                assert await _available(client) < before, url


@pytest.mark.anyio
async def test_with_the_access_log_off_a_5xx_is_still_logged_the_fast_way(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dry pool answers 503 to every retry: each is logged with the access log off too, but
    batched like access lines, not through structlog (which cost 3x the request: 13.6k
    against 24k answers a second over HTTP); a 200 is not logged at all."""
    app = build_app(EntropyService(_settings(QRNG_ACCESS_LOG="false")))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        capsys.readouterr()
        dry = await client.get("/api/integers?count=10", headers=BEARER)
        assert dry.status_code == 503
        assert capsys.readouterr().err == ""  # waiting in the batch
        await _fill(client, 4096)
        served = await client.get("/api/integers?count=10", headers=BEARER)
        assert served.status_code == 200
        app.flush_log()
    logs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["endpoint"], e["status"]) for e in logs] == [("integers", 503)]


@pytest.mark.anyio
async def test_a_request_the_pool_can_never_hold_is_a_400_before_anything_is_charged() -> None:
    """1000 integers are 8000 bytes: on a 1 KiB pool that is never there, so a 503 saying
    "retry" would be a lie. With a budget of 8000 bytes a second, the refusal charged
    nothing: 125 integers (1000 bytes) still pass right after."""
    async with _client(QRNG_BUFFER_SIZE="1024", QRNG_BYTE_RATE_LIMIT="1000") as client:
        await _fill(client, 1024)
        response = await client.get("/api/integers?count=1000", headers=BEARER)
        detail = _problem(response, 400)["detail"]
        assert "'count'" in detail
        assert "1024" in detail
        assert (await client.get("/api/integers?count=125", headers=BEARER)).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "url", "status"), _AUTH)
async def test_the_key_comes_from_the_bearer_header_first_then_the_query(
    headers: dict[str, str], url: str, status: int
) -> None:
    async with _client() as client:
        await _fill(client, 4096)
        response = await client.get(url, headers=headers)
        assert response.status_code == status, response.text
        if status == 401:
            assert _problem(response, 401)["detail"]
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.anyio
async def test_a_repeated_query_is_parsed_once_but_authenticated_charged_and_drawn_each_time() -> (
    None
):
    """The front keeps parsed queries per route (the hot path's memo): a second identical
    request still checks its key, still draws fresh bytes, and a bad value is never kept."""
    async with _client() as client:
        await _fill(client, 4096)
        before = await _available(client)
        bodies = set()
        for _ in range(3):
            for headers, url, status in _AUTH:
                response = await client.get(url, headers=headers)
                assert response.status_code == status, (url, response.text)
                if status == 200 and "random" in url:
                    bodies.add(response.text)
            assert _problem(await client.get("/api/random?bytes=0", headers=BEARER), 400)
        draws = 3 * sum(1 for _, url, status in _AUTH if status == 200 and "random" in url)
        assert len(bodies) == draws  # every draw fresh
        assert await _available(client) <= before - draws * 4


@pytest.mark.anyio
async def test_unknown_paths_and_methods_are_problems() -> None:
    """404 and 405 (with Allow) read like every other refusal; HEAD is GET without a body."""
    async with _client() as client:
        await _fill(client, 4096)
        assert "/nope" in _problem(await client.get("/nope"), 404)["detail"]
        _problem(await client.get("/api/random/", headers=BEARER), 404)
        refused = await client.post("/api/random", headers=BEARER)
        assert _problem(refused, 405)["detail"].startswith("POST /api/random")
        assert refused.headers["allow"] == "GET"
        assert (await client.get("/push")).headers["allow"] == "POST"
        head = await client.head("/api/uuid", headers=BEARER)
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) == 36


@pytest.mark.anyio
async def test_short_of_entropy_is_a_503_that_takes_nothing() -> None:
    async with _client() as client:
        await _fill(client, 1000)
        for url in ("/api/random?bytes=6000", "/api/integers?count=1000", "/api/uuid?count=100"):
            before = await _available(client)
            response = await client.get(url, headers=BEARER)
            assert "nothing was taken" in _problem(response, 503)["detail"]
            assert response.headers["retry-after"] == "1"
            assert await _available(client) == before


@pytest.mark.anyio
async def test_an_unexpected_failure_is_a_logged_500_problem() -> None:
    service = EntropyService(_settings())

    def boom(n: int) -> bytes:
        raise RuntimeError("pool on fire")

    service.take = boom  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=build_app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        with capture_logs() as logs:
            response = await client.get("/api/random?bytes=4", headers=BEARER)
        metrics = (await client.get("/metrics")).text
    assert [e["event"] for e in logs] == ["unhandled_error"]
    assert "pool on fire" not in response.text
    assert _problem(response, 500)["detail"] == "the gateway failed; see its log"
    assert 'qrng_requests_total{endpoint="random",status="500"} 1.0' in metrics


@pytest.mark.anyio
async def test_the_lifespan_runs_the_servers_context_and_reports_a_failed_start() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        events.append("up")
        yield
        events.append("down")

    async def drive(app: Front) -> list[str]:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: Any) -> None:
            sent.append(message["type"])

        with contextlib.suppress(RuntimeError):
            await app({"type": "lifespan"}, receive, send)
        return sent

    service = EntropyService(_settings())
    sent = await drive(Front(service, lifespan=lifespan))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["up", "down"]

    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[None]:
        raise RuntimeError("state dir locked")
        yield

    assert await drive(Front(service, lifespan=broken)) == ["lifespan.startup.failed"]


@pytest.mark.anyio
async def test_a_websocket_is_closed() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    await Front(EntropyService(_settings()))({"type": "websocket"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


def test_two_routes_on_one_path_are_refused() -> None:
    with pytest.raises(ValueError, match="two routes"):
        Front(EntropyService(_settings()), (*ROUTES, ROUTES[0]))


# -- the policy's fields on every answer to a key ---------------------------------------------

# (method, url, requests left of a burst of 100 after it: a 400 and status charge nothing)
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
    """``Cache-Control: no-store`` (a shared cache must never serve these bytes again) and the
    RateLimit fields, the request just made already counted."""
    async with _client(QRNG_RATE_LIMIT="50", QRNG_RATE_BURST="100") as client:
        await _fill(client, 8192)
        response = await client.request(method, url, headers=BEARER)
        assert response.status_code in (200, 400), response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["ratelimit-policy"] == '"requests";q=100;w=2'
        assert response.headers["ratelimit"].startswith(f'"requests";r={left};t=')


@pytest.mark.anyio
async def test_the_byte_budget_shows_in_the_fields_and_the_429() -> None:
    """With QRNG_BYTE_RATE_LIMIT the bytes policy joins; its 429 says when."""
    async with _client(QRNG_BYTE_RATE_LIMIT="4096") as client:
        await _fill(client, 16384)
        ok = await client.get("/api/random?bytes=4096", headers=BEARER)
        limited = await client.get("/api/random?bytes=4096", headers=BEARER)
        assert ok.status_code == 200
        assert ok.headers["ratelimit-policy"] == (
            '"requests";q=200000;w=2, "bytes";q=4096;w=1;qu="content-bytes"'
        )
        assert ok.headers["ratelimit"].endswith('"bytes";r=0;t=1')
        assert _problem(limited, 429)["detail"] == "rate limit for this key exceeded; retry in 1 s"
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["cache-control"] == "no-store"


@pytest.mark.anyio
async def test_no_key_no_rate_limit_fields() -> None:
    """A 401 names no budget (whose would it be?) and /health is not an entropy answer."""
    async with _client() as client:
        missing = await client.get("/api/random")
        health = await client.get("/health")
        assert missing.status_code == 401
        assert "ratelimit" not in missing.headers
        assert "ratelimit" not in health.headers


# -- one table, three views -----------------------------------------------------------------


@pytest.mark.anyio
async def test_the_openapi_document_states_the_tables_limits_for_this_gateway() -> None:
    """Every route and method once, each parameter with the limits the front enforces here
    (``QRNG_MAX_REQUEST_BYTES`` and the pool's capacity included)."""
    async with _client(QRNG_MAX_REQUEST_BYTES="1000") as client:
        document = (await client.get("/openapi.json")).json()
    assert {path: set(ops) for path, ops in document["paths"].items()} == {
        route.path: {m.lower() for m in route.methods} for route in ROUTES
    }
    schema = {p["name"]: p["schema"] for p in document["paths"]["/api/random"]["get"]["parameters"]}
    assert schema["bytes"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 32}
    assert schema["encoding"]["enum"] == ["hex", "base64", "binary"]
    (iterations,) = document["paths"]["/api/test/monte-carlo"]["post"]["parameters"]
    assert iterations["schema"]["maximum"] == 65536 // 16
    assert "security" not in document["paths"]["/push"]["post"]
    assert document["paths"]["/api/uuid"]["get"]["security"]


@pytest.mark.anyio
async def test_the_mcp_tools_state_the_tables_limits() -> None:
    """A model reads in each tool's schema the very limits of the REST route behind it."""
    service = EntropyService(_settings())
    tools = {
        t.name: t.input_schema for t in await create_server(ServiceBackend(service)).list_tools()
    }
    pairs = [
        ("get_random_bytes", "count", "random", "bytes"),
        ("get_random_integers", "count", "integers", "count"),
        ("get_random_integers", "min", "integers", "min"),
        ("get_random_floats", "count", "floats", "count"),
        ("get_random_uuid", "count", "uuid", "count"),
    ]
    for tool, argument, route, name in pairs:
        schema = tools[tool]["properties"][argument]
        param = BY_NAME[route].bind(None).param(name)
        assert (schema["minimum"], schema["maximum"]) == (param.low, param.maximum), tool


@pytest.mark.anyio
async def test_a_route_added_to_the_table_is_served_documented_and_charged() -> None:
    """One entry and a handler: the front serves it, with auth and its byte cost."""
    from qrng_dd.gateway.api import Param, Reply, Route

    def coin(call: Any) -> Reply:
        return Reply.json([b & 1 for b in call.service.take(call.args["flips"])])

    route = Route(
        "coin",
        "/api/coin",
        ("GET",),
        "Fair coin flips",
        coin,
        params=(Param("flips", "how many", 1, 1, 64),),
        cost=lambda args: args["flips"],
    )
    service = EntropyService(_settings(QRNG_BYTE_RATE_LIMIT="10"))
    app = Front(service, (*ROUTES, route))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        await _fill(client, 1000)
        flips = await client.get("/api/coin?flips=10", headers=BEARER)
        assert flips.status_code == 200
        assert set(flips.json()) <= {0, 1}
        assert len(flips.json()) == 10
        assert (await client.get("/api/coin?flips=1", headers=BEARER)).status_code == 429
        assert (await client.get("/api/coin?flips=65", headers=BEARER)).status_code == 400
        assert (await client.get("/api/coin")).status_code == 401
        document = (await client.get("/openapi.json")).json()
        assert document["paths"]["/api/coin"]["get"]["summary"] == "Fair coin flips"
