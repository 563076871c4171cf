"""The MCP server through the SDK's own client: in process, over stdio, over streamable HTTP.

Most tests drive :func:`create_server` in process. The end-to-end ones run a real gateway on
loopback and a real ``python -m qrng_dd.mcp.server`` subprocess (stdio and HTTP), and use the
gateway's own ``/mcp`` mount.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from mcp import Client, StdioServerParameters, stdio_client
from qrng_dd.config import GatewaySettings, load
from qrng_dd.gateway.openapi import openapi_document
from qrng_dd.gateway.routes import ROUTES
from qrng_dd.gateway.service import EntropyService
from qrng_dd.mcp.backends import BackendError, HttpBackend, ServiceBackend
from qrng_dd.mcp.http import origin_allowed
from qrng_dd.mcp.tools import create_server, quarantined_sources
from qrng_dd.wire.packet import PacketKey
from qrng_dd.wire.telemetry import encode_telemetry
from tests.support.gateway import (
    RunningGateway,
    clean_environ,
    free_port,
    make_raw,
    push_packets,
    start_gateway,
    stop,
)

HMAC_HEX = "ab" * 32
API_KEY = "k" * 20
TOOLS = {
    "get_random_bytes",
    "get_random_hex",
    "get_random_base64",
    "get_random_integers",
    "get_random_floats",
    "get_random_uuid",
    "get_random_gaussians",
    "get_random_strings",
    "shuffle_items",
    "draw_lottery",
    "roll_dice",
    "generate_passwords",
    "get_status",
}
DRAWING_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("get_random_bytes", {"count": 16}),
    ("get_random_hex", {"count": 16}),
    ("get_random_base64", {"count": 16}),
    ("get_random_integers", {"count": 5}),
    ("get_random_floats", {"count": 5}),
    ("get_random_uuid", {"count": 2}),
    ("get_random_gaussians", {"count": 2}),
    ("get_random_strings", {"count": 2}),
    ("shuffle_items", {"items": [str(i) for i in range(30)]}),
    ("draw_lottery", {"n": 10**6, "k": 6}),
    ("roll_dice", {"notation": "100d6"}),
    ("generate_passwords", {}),
]
QUARANTINE = {"health": {"appliance-1": "quarantined"}}
DEADLINE_S = 20.0


def _service(fill: int = 0) -> EntropyService:
    settings = load(
        GatewaySettings,
        {"QRNG_HMAC_SECRET_KEY": HMAC_HEX, "QRNG_API_KEYS": API_KEY, "QRNG_MAX_CLOCK_SKEW_S": "0"},
    )
    service = EntropyService(settings)
    if fill:
        service.pool.add(os.urandom(fill))
    return service


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


class RecordingBackend:
    """A backend that only records that it was asked; any call is a test failure."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def bind(self, caller: str | None) -> RecordingBackend:
        return self

    async def random_bytes(self, count: int) -> bytes:
        self.calls.append("random_bytes")
        return bytes(count)

    async def integers(self, count: int, low: int, high: int) -> list[int]:
        self.calls.append("integers")
        return [low] * count

    async def floats(self, count: int) -> list[float]:
        self.calls.append("floats")
        return [0.0] * count

    async def uuids(self, count: int) -> list[str]:
        self.calls.append("uuids")
        return [str(uuid.uuid4())] * count

    async def status(self) -> dict[str, Any]:
        self.calls.append("status")
        return {}

    async def shape(self, route: str, args: Mapping[str, Any]) -> Any:
        self.calls.append(route)
        return []


async def _check_every_tool(client: Client) -> None:
    """Call every tool and check the values it returns, structured and as text."""
    tools = await client.list_tools()
    assert {tool.name for tool in tools.tools} == TOOLS
    assert all(tool.output_schema for tool in tools.tools)

    for name, encoding in (("get_random_hex", "hex"), ("get_random_base64", "base64")):
        result = await client.call_tool(name, {"count": 48})
        assert not result.is_error, _text(result)
        data = result.structured_content
        assert data is not None
        assert data["count"] == 48
        assert data["encoding"] == encoding
        raw = bytes.fromhex(data["data"]) if encoding == "hex" else base64.b64decode(data["data"])
        assert len(raw) == 48
        assert data["data"] in _text(result)

    result = await client.call_tool("get_random_bytes", {"count": 7, "encoding": "base64"})
    assert result.structured_content is not None
    assert len(base64.b64decode(result.structured_content["data"])) == 7
    result = await client.call_tool("get_random_bytes", {})
    assert result.structured_content is not None
    assert len(bytes.fromhex(result.structured_content["data"])) == 32

    result = await client.call_tool("get_random_integers", {"count": 200, "min": -3, "max": 3})
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    values = result.structured_content["values"]
    assert len(values) == 200
    assert all(-3 <= v <= 3 for v in values)
    full = {"count": 3, "min": -(2**63), "max": 2**63 - 1}
    result = await client.call_tool("get_random_integers", full)
    assert result.structured_content is not None
    assert len(result.structured_content["values"]) == 3

    result = await client.call_tool("get_random_floats", {"count": 100})
    assert result.structured_content is not None
    floats = result.structured_content["values"]
    assert len(floats) == 100
    assert all(0.0 <= f < 1.0 for f in floats)

    for count in (1, 5):
        result = await client.call_tool("get_random_uuid", {"count": count})
        assert result.structured_content is not None
        uuids = result.structured_content["uuids"]
        assert len(uuids) == count
        assert all(uuid.UUID(u).version == 4 for u in uuids)
        assert _text(result).splitlines() == uuids

    await _check_every_shape_tool(client)

    result = await client.call_tool("get_status", {})
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    assert result.structured_content["buffer_bytes_available"] > 0
    assert result.structured_content["quarantined"] == []


async def _values(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    return result.structured_content


async def _check_every_shape_tool(client: Client) -> None:
    """The shape tools: what each REST shape route gives, through MCP."""
    gauss = await _values(client, "get_random_gaussians", {"count": 4, "mean": 5, "stddev": 0})
    assert gauss == {"count": 4, "values": [5.0] * 4}
    strings = await _values(client, "get_random_strings", {"count": 3, "length": 5,
                                                            "alphabet": "ab"})  # fmt: skip
    assert len(strings["values"]) == 3
    assert all(len(v) == 5 and set(v) <= {"a", "b"} for v in strings["values"])
    items = ["alice", "bob", "carol", "dave"]
    shuffled = await _values(client, "shuffle_items", {"items": items})
    assert sorted(shuffled["values"]) == sorted(items)
    drawn = await _values(client, "draw_lottery", {"n": 49, "k": 6})
    assert len(set(drawn["values"])) == 6
    assert all(1 <= v <= 49 for v in drawn["values"])
    roll = await _values(client, "roll_dice", {"notation": "2d6+3"})
    assert roll["total"] == sum(roll["rolls"]) + 3
    assert all(1 <= r <= 6 for r in roll["rolls"])
    passwords = await _values(client, "generate_passwords", {"count": 2, "charset": "digits"})
    assert [len(p) for p in passwords["passwords"]] == [20, 20]
    assert all(p.isdigit() for p in passwords["passwords"])
    refusals: list[tuple[str, dict[str, Any], str]] = [
        ("roll_dice", {"notation": "3x6"}, "'notation'"),
        ("draw_lottery", {"n": 3, "k": 4}, "'k'"),
        ("get_random_strings", {"alphabet": "aa"}, "'alphabet'"),
        ("shuffle_items", {"items": ["a,b", "c"]}, "comma"),
    ]
    for tool, arguments, word in refusals:
        result = await client.call_tool(tool, arguments)
        assert result.is_error, tool
        assert word in _text(result), (tool, _text(result))


# -- in process -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_limit_is_stated_in_the_input_schemas() -> None:
    """Each tool's input schema states its minimum, maximum, enum and default."""
    async with Client(create_server(RecordingBackend())) as client:
        tools = {
            tool.name: tool.input_schema["properties"] for tool in (await client.list_tools()).tools
        }
    for name in ("get_random_bytes", "get_random_hex", "get_random_base64"):
        count = tools[name]["count"]
        assert (count["minimum"], count["maximum"], count["default"]) == (1, 65536, 32)
    assert tools["get_random_bytes"]["encoding"]["enum"] == ["hex", "base64"]
    assert tools["get_random_bytes"]["encoding"]["default"] == "hex"
    count = tools["get_random_integers"]["count"]
    assert (count["minimum"], count["maximum"], count["default"]) == (1, 1000, 10)
    for bound, default in (("min", 0), ("max", 100)):
        field = tools["get_random_integers"][bound]
        assert (field["minimum"], field["maximum"]) == (-(2**63), 2**63 - 1)
        assert field["default"] == default
    floats = tools["get_random_floats"]["count"]
    assert (floats["minimum"], floats["maximum"]) == (1, 1000)
    uuids = tools["get_random_uuid"]["count"]
    assert (uuids["minimum"], uuids["maximum"], uuids["default"]) == (1, 100, 1)
    assert tools["get_status"] == {}


@pytest.mark.anyio
async def test_every_tool_serves_pool_entropy_in_process() -> None:
    """Every tool answers from the service's pool with values of the right shape."""
    service = _service(fill=200_000)
    async with Client(create_server(ServiceBackend(service))) as client:
        await _check_every_tool(client)
    assert service.pool.taken_total > 0


@pytest.mark.anyio
async def test_the_legacy_handshake_works_too() -> None:
    """A client that insists on the initialize handshake gets the same tools."""
    async with Client(create_server(ServiceBackend(_service(fill=200_000))), mode="legacy") as c:
        await _check_every_tool(c)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "arguments", "why"),
    [
        ("get_random_bytes", {"count": 0}, "count"),
        ("get_random_bytes", {"count": 65537}, "count"),
        ("get_random_bytes", {"count": 4, "encoding": "binary"}, "encoding"),
        ("get_random_hex", {"count": -1}, "count"),
        ("get_random_base64", {"count": 100_000}, "count"),
        ("get_random_integers", {"count": 1001}, "count"),
        ("get_random_integers", {"min": -(2**63) - 1}, "min"),
        ("get_random_integers", {"max": 2**63}, "max"),
        ("get_random_integers", {"min": 5, "max": 4}, "min (5) must not be greater than max (4)"),
        ("get_random_floats", {"count": 0}, "count"),
        ("get_random_uuid", {"count": 101}, "count"),
        ("get_random_uuid", {"count": "many"}, "count"),
    ],
)
async def test_bad_arguments_are_refused_before_the_backend_is_asked(
    tool: str, arguments: dict[str, Any], why: str
) -> None:
    """Out-of-range or malformed arguments are a tool error; the backend is never called."""
    backend = RecordingBackend()
    async with Client(create_server(backend)) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert why in _text(result)
    assert result.structured_content is None
    assert backend.calls == []


@pytest.mark.anyio
async def test_short_of_entropy_is_a_tool_error_that_says_why() -> None:
    """An empty pool makes every drawing tool fail with the reason; nothing is made up."""
    service = _service(fill=10)
    async with Client(create_server(ServiceBackend(service))) as client:
        for tool, arguments in DRAWING_CALLS:
            result = await client.call_tool(tool, arguments)
            assert result.is_error, tool
            assert "short of entropy" in _text(result)
            assert "Retry in 1 s" in _text(result)
            assert "quarantine" not in _text(result).lower()
            assert result.structured_content is None
        status = await client.call_tool("get_status", {})
    assert service.pool.available == 10
    assert not status.is_error


@pytest.mark.anyio
async def test_a_draw_the_pool_can_never_hold_is_refused_not_short() -> None:
    """1000 integers are 8000 bytes: on a 1 KiB pool the tool says so (as REST's 400 does),
    never "short of entropy, retry"; nothing is taken. So are 128 integers over half the
    64-bit range: they cost 1024 bytes, but rejection sampling may read up to 3216."""
    settings = load(
        GatewaySettings,
        {"QRNG_HMAC_SECRET_KEY": HMAC_HEX, "QRNG_API_KEYS": API_KEY, "QRNG_BUFFER_SIZE": "1024"},
    )
    service = EntropyService(settings)
    service.pool.add(os.urandom(1024))
    async with Client(create_server(ServiceBackend(service))) as client:
        result = await client.call_tool("get_random_integers", {"count": 1000})
        half = {"count": 128, "min": -(2**63), "max": 0}
        rejecting = await client.call_tool("get_random_integers", half)
        small = await client.call_tool("get_random_integers", {"count": 100})
    assert rejecting.is_error
    assert "may read up to" in _text(rejecting)
    assert result.is_error
    assert "Bad arguments" in _text(result)
    assert "more than this gateway's pool can ever hold" in _text(result)
    assert not small.is_error
    assert service.pool.available == 1024 - 800


@pytest.mark.anyio
async def test_a_quarantined_source_is_named_when_short_of_entropy() -> None:
    """Short of entropy with a quarantined appliance: the message says which and why."""
    service = _service()
    key = PacketKey.from_hex(HMAC_HEX)
    service.ingest_datagram(make_raw(key, encode_telemetry(QUARANTINE), source="inside", flags=3))
    async with Client(create_server(ServiceBackend(service))) as client:
        result = await client.call_tool("get_random_integers", {"count": 3})
        status = await client.call_tool("get_status", {})
    assert result.is_error
    assert "short of entropy" in _text(result)
    assert "inside/appliance-1" in _text(result)
    assert "quarantined" in _text(result).lower()
    assert status.structured_content is not None
    assert status.structured_content["quarantined"] == ["inside/appliance-1"]


def test_quarantined_sources_are_the_status_documents_structured_list() -> None:
    """The list is read as the gateway typed it; the human warnings are never parsed."""
    status = {
        "warnings": ["source a/y is quarantined"],
        "quarantined": ["b/x", "a/x", 7],
    }
    assert quarantined_sources(status) == ["a/x", "b/x"]
    assert quarantined_sources({"warnings": ["source a/x is quarantined"]}) == []
    assert quarantined_sources({"quarantined": "a/x"}) == []


def test_origins_are_loopback_or_listed() -> None:
    """Loopback origins on any port pass, others only when listed."""
    assert origin_allowed("http://localhost:3000")
    assert origin_allowed("http://127.0.0.1")
    assert origin_allowed("https://[::1]:8443")
    assert not origin_allowed("http://evil.example")
    assert not origin_allowed("null")
    assert not origin_allowed("http://localhost.evil.example")
    assert origin_allowed("https://app.example/", ["https://app.example"])


# -- HTTP backend against canned answers ------------------------------------------------------


#: What a gateway with the default settings says about its routes (the client reads its limits).
_OPENAPI = openapi_document([route.bind(_service().settings) for route in ROUTES])


def _canned(status: int, body: str, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json=_OPENAPI)
        return httpx.Response(status, text=body, headers=headers)

    return httpx.MockTransport(handler)


def _problem(status: int, detail: str) -> str:
    return f'{{"type":"about:blank","title":"x","status":{status},"detail":"{detail}"}}'


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (
            429,
            _problem(429, "slow down"),
            {"Retry-After": "3"},
            "Rate limited by the gateway: slow down. Retry in 3 s",
        ),
        (401, _problem(401, "unknown API key"), None, "refused the API key: unknown API key"),
        (400, _problem(400, "bad count"), None, "Bad arguments: bad count"),
        (500, "oops", None, "The gateway failed: HTTP 500: Internal Server Error"),
        (200, "zz", None, "2 bytes instead of 8"),
        (200, "abcdef", None, "6 bytes instead of 8"),
    ],
)
async def test_gateway_answers_become_tool_errors_that_say_why(
    status: int, body: str, headers: dict[str, str] | None, expected: str
) -> None:
    """Each refusal or malformed answer of the gateway is a tool error naming its cause."""
    transport = _canned(status, body, headers)
    async with (
        HttpBackend("http://gw", API_KEY, transport=transport) as backend,
        Client(create_server(backend)) as client,
    ):
        result = await client.call_tool("get_random_hex", {"count": 8})
    assert result.is_error
    assert expected in _text(result)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("route_body", "call"),
    [
        ("[1, 2, 300]", ("integers", (3, 0, 100))),
        ("[1, 2]", ("integers", (3, 0, 100))),
        ("[0.5, 1.0]", ("floats", (2,))),
        ('["not-a-uuid", "x"]', ("uuids", (2,))),
        ("[1]", ("status", ())),
    ],
)
async def test_malformed_gateway_answers_are_refused(
    route_body: str, call: tuple[str, tuple[int, ...]]
) -> None:
    """Out-of-range or misshapen values from the wire are refused, never passed on."""
    async with HttpBackend("http://gw", API_KEY, transport=_canned(200, route_body)) as backend:
        with pytest.raises(BackendError) as info:
            await getattr(backend, call[0])(*call[1])
    assert info.value.kind == "gateway"


@pytest.mark.anyio
async def test_an_unreachable_gateway_is_a_tool_error() -> None:
    """A gateway URL where nothing listens gives 'unreachable', not a crash."""
    url = f"http://127.0.0.1:{free_port()}"
    async with (
        HttpBackend(url, API_KEY, timeout=5) as backend,
        Client(create_server(backend)) as client,
    ):
        result = await client.call_tool("get_random_uuid", {})
        status = await client.call_tool("get_status", {})
    for outcome in (result, status):
        assert outcome.is_error
        assert "unreachable" in _text(outcome)
        assert url in _text(outcome)


# -- real processes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    """A real gateway with MCP mounted and a filled pool."""
    env = {"QRNG_HMAC_SECRET_KEY": HMAC_HEX, "QRNG_API_KEYS": API_KEY, "QRNG_MCP_ENABLED": "true"}
    with start_gateway(env) as running:
        push_packets(running.url, running.key, 8, 65_536)
        yield running


def _mcp_env(gateway_url: str, api_key: str = API_KEY, **extra: str) -> dict[str, str]:
    env = {
        "QRNG_GATEWAY_URL": gateway_url,
        "QRNG_GATEWAY_API_KEY": api_key,
        "QRNG_LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def _mcp_http_process(env: dict[str, str]) -> Iterator[str]:
    """``python -m qrng_dd.mcp.server --transport http`` on a free port; yields its URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "qrng_dd.mcp.server",
        "--transport",
        "http",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}/mcp"
    with (
        tempfile.TemporaryFile() as err,
        subprocess.Popen(
            command, env=clean_environ(env), stdout=subprocess.DEVNULL, stderr=err
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + DEADLINE_S
            with httpx.Client(timeout=1.0) as probe:
                while True:
                    assert proc.poll() is None, "MCP server exited early"
                    try:
                        probe.get(url)
                        break
                    except httpx.TransportError:
                        assert time.monotonic() < deadline, "MCP server not ready in time"
                        time.sleep(0.05)  # polling interval, bounded by the deadline
            yield url
        finally:
            stop(proc)
            err.seek(0)
            assert b"Traceback" not in err.read()


@contextlib.asynccontextmanager
async def _http_client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=20.0) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


@pytest.mark.anyio
@pytest.mark.e2e
async def test_stdio_subprocess_serves_every_tool_from_a_real_gateway(
    gateway: RunningGateway,
) -> None:
    """``python -m qrng_dd.mcp.server`` over stdio answers every tool from a real gateway."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "qrng_dd.mcp.server"], env=_mcp_env(gateway.url)
    )
    with tempfile.TemporaryFile("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await _check_every_tool(client)
        errlog.seek(0)
        assert "Traceback" not in errlog.read()


@pytest.mark.anyio
@pytest.mark.e2e
async def test_http_subprocess_serves_every_tool_behind_its_token(gateway: RunningGateway) -> None:
    """Streamable HTTP at /mcp: every tool with the token; 401 without, 403 for a foreign Origin."""
    token = "t" * 24
    env = _mcp_env(
        gateway.url, QRNG_MCP_AUTH_TOKEN=token, QRNG_MCP_ALLOWED_ORIGINS="https://ok.example"
    )
    with _mcp_http_process(env) as url:
        async with _http_client(url, {"Authorization": f"Bearer {token}"}) as client:
            await _check_every_tool(client)
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        async with httpx.AsyncClient(timeout=10.0) as http:
            missing = await http.post(url, json=body)
            wrong = await http.post(url, json=body, headers={"Authorization": "Bearer nope"})
            foreign = await http.post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {token}", "Origin": "http://evil.example"},
            )
            listed = await http.post(
                url,
                json=body,
                headers={"Authorization": "Bearer nope", "Origin": "https://ok.example"},
            )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert foreign.status_code == 403
    assert listed.status_code == 401  # the Origin passed; the token did not


@pytest.mark.anyio
@pytest.mark.e2e
async def test_the_gateway_mount_serves_every_tool_behind_its_api_key(
    gateway: RunningGateway,
) -> None:
    """The gateway's own /mcp (no redirect) answers every tool for a valid API key only."""
    url = f"{gateway.url}/mcp"
    async with _http_client(url, gateway.auth) as client:
        await _check_every_tool(client)
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient(timeout=10.0) as http:
        missing = await http.post(url, json=body)
        wrong = await http.post(url, json=body, headers={"Authorization": "Bearer " + "x" * 20})
        foreign = await http.post(
            url, json=body, headers={**gateway.auth, "Origin": "http://evil.example"}
        )
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert foreign.status_code == 403


@pytest.mark.anyio
@pytest.mark.e2e
async def test_a_bad_api_key_is_a_tool_error(gateway: RunningGateway) -> None:
    """A key the gateway does not know gives a tool error naming the API key setting."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "qrng_dd.mcp.server"],
        env=_mcp_env(gateway.url, api_key="wrong-key-" + "w" * 10),
    )
    with tempfile.TemporaryFile("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            result = await client.call_tool("get_random_bytes", {"count": 4})
    assert result.is_error
    assert "refused the API key" in _text(result)
    assert "QRNG_GATEWAY_API_KEY" in _text(result)


@pytest.mark.anyio
@pytest.mark.e2e
async def test_short_and_quarantined_over_a_real_gateway() -> None:
    """An empty gateway says 'short of entropy'; after quarantine telemetry it names the source."""
    with start_gateway({"QRNG_HMAC_SECRET_KEY": HMAC_HEX, "QRNG_API_KEYS": API_KEY}) as running:
        async with (
            HttpBackend(running.url, API_KEY) as backend,
            Client(create_server(backend)) as client,
        ):
            before = await client.call_tool("get_random_bytes", {"count": 8})
            raw = make_raw(running.key, encode_telemetry(QUARANTINE), flags=3)
            async with running.async_client() as http:
                assert (await http.post("/push", content=raw)).status_code == 200
            after = await client.call_tool("get_random_floats", {"count": 2})
    assert before.is_error
    assert "short of entropy" in _text(before)
    assert "quarantine" not in _text(before).lower()
    assert after.is_error
    assert "short of entropy" in _text(after)
    assert "collector/appliance-1" in _text(after)
    assert "quarantined" in _text(after).lower()


@pytest.mark.anyio
@pytest.mark.e2e
async def test_a_rate_limited_key_is_a_tool_error() -> None:
    """Past the gateway's rate limit a call fails with 'rate limited' and when to retry."""
    env = {
        "QRNG_HMAC_SECRET_KEY": HMAC_HEX,
        "QRNG_API_KEYS": API_KEY,
        "QRNG_RATE_LIMIT": "1",
        "QRNG_RATE_BURST": "1",
    }
    with start_gateway(env) as running:
        push_packets(running.url, running.key, 1, 4096)
        async with (
            HttpBackend(running.url, API_KEY) as backend,
            Client(create_server(backend)) as client,
        ):
            results = [await client.call_tool("get_random_hex", {"count": 4}) for _ in range(5)]
    limited = [r for r in results if r.is_error]
    assert limited, "no call was rate limited"
    assert all("Rate limited by the gateway" in _text(r) for r in limited)
    assert all("Retry in" in _text(r) for r in limited)


@pytest.mark.anyio
async def test_the_gateway_mount_charges_the_gateways_rate_limit() -> None:
    """MCP requests on /mcp draw on the same per-key bucket as REST: the second is a 429."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute

    from qrng_dd.mcp.http import _Guard

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    key = "k" * 20
    settings = load(
        GatewaySettings,
        {"QRNG_HMAC_SECRET_KEY": "ab" * 32, "QRNG_API_KEYS": key,
         "QRNG_RATE_LIMIT": "1", "QRNG_RATE_BURST": "1"},
    )  # fmt: skip
    service = EntropyService(settings)
    guard = _Guard(inner, policy=service.policy)
    app = Starlette(routes=[StarletteRoute("/mcp", endpoint=guard, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        headers = {"Authorization": f"Bearer {key}"}
        assert (await client.post("/mcp", headers=headers)).status_code == 200
        second = await client.post("/mcp", headers=headers)
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
