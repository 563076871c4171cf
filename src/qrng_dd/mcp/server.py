"""The MCP server: quantum entropy as tools a language model can call (DESIGN §7).

Theory of operation
-------------------

Seven tools (``get_random_bytes``, ``get_random_hex``, ``get_random_base64``,
``get_random_integers``, ``get_random_floats``, ``get_random_uuid``, ``get_status``) are
registered on the official SDK's :class:`~mcp.server.mcpserver.MCPServer` by
:func:`create_server`. Each one asks a :class:`Backend` and nothing else; the backend is the
only thing that knows where entropy lives:

- :class:`HttpBackend` is a client of a gateway's REST API (DESIGN §5) over one pooled
  ``httpx.AsyncClient``. This is ``qrng-dd mcp``: a separate process that holds only an API
  key, never the HMAC key, so it can run next to the model on the external network.
- :class:`ServiceBackend` calls the gateway's in-process
  :class:`~qrng_dd.gateway.service.EntropyService`. This is the gateway's own ``/mcp``
  (:func:`mount_in_gateway`): no extra hop, same pool, same accounting (P3).

Rules every tool keeps:

1. **Limits are in the schema.** Every argument's minimum, maximum, enum and default is in the
   tool's JSON input schema, so a model sees them before it calls. The SDK validates the
   arguments against that schema before the tool body runs, and the one rule a schema cannot
   state (``min <= max``) is checked first thing in the body, so a bad call never reaches the
   backend and never drains the pool.
2. **Honest failure (P4).** Short of entropy, rate limited, unreachable, bad key: each becomes
   a tool error (``isError: true``) whose text says why and what to do. Nothing is ever padded,
   retried with pseudo-random bytes, or made up. When the gateway is short of entropy the tool
   also reads the gateway's status, and if a source is quarantined (P5) the message says so.
3. **Trust nothing that came over the wire.** :class:`HttpBackend` checks every answer's shape
   (length, range, UUID version) and refuses a malformed one rather than pass it on.
4. **Structured results.** Each tool declares an output schema (a pydantic model) and returns
   the structured value plus a readable text rendering of it.

Transports: stdio (the default; stdout carries the protocol, so every log line goes to
stderr) or streamable HTTP at exactly ``/mcp``. Over HTTP the endpoint checks ``Origin`` as the
MCP specification asks (a browser page on another site must not reach a local server: DNS
rebinding) and, when ``QRNG_MCP_AUTH_TOKEN`` is set, a bearer token. The gateway's mount asks
for one of the gateway's API keys instead, like every other entropy route. Tokens are compared
in constant time and never logged (P6).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qrng_dd import __version__
from qrng_dd.errors import EntropyExhaustedError, QrngError
from qrng_dd.gateway.policy import (
    BYTES_PER_FLOAT,
    BYTES_PER_INTEGER,
    BYTES_PER_UUID,
    Policy,
    Problem,
)

if TYPE_CHECKING:
    from qrng_dd.gateway.service import EntropyService

log = logging.getLogger(__name__)

T = TypeVar("T")

MCP_PATH: Final = "/mcp"
#: Where the HTTP guard leaves the API key it authenticated, for the tools to charge.
CALLER_SCOPE_KEY: Final = "qrng_dd.api_key"
DEFAULT_HTTP_PORT: Final = 8080

# The REST API's own limits (DESIGN §5), restated so a model reads them in the schema.
MAX_BYTES: Final = 65_536
MAX_COUNT: Final = 1000
MAX_UUIDS: Final = 100
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# One MCP client holds one session; a few hundred cover any real deployment, and a cap keeps
# a flood of initialize requests from growing memory without bound.
MAX_SESSIONS: Final = 256
# MCP messages here are small JSON-RPC requests; 1 MiB is generous and bounds a hostile body.
MAX_BODY_BYTES: Final = 1_048_576
# One MCP process serves one user or a few agents; 16 connections to the gateway are plenty
# and keep a runaway model from opening thousands.
_LIMITS: Final = httpx.Limits(max_connections=16, max_keepalive_connections=8)

_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_QUARANTINE: Final = re.compile(r"source (\S+) is quarantined")

FailureKind = Literal["short", "rate_limited", "unauthorized", "unreachable", "refused", "gateway"]


class BackendError(QrngError):
    """A backend could not answer; ``kind`` says why, ``str()`` gives the details."""

    def __init__(self, kind: FailureKind, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.kind: FailureKind = kind
        self.detail = detail
        self.retry_after = retry_after


class Backend(Protocol):
    """Where the tools get entropy. Every method raises :class:`BackendError` on failure."""

    def bind(self, caller: str | None) -> Backend:
        """This backend answering for ``caller`` (the API key of the MCP request)."""
        ...

    async def random_bytes(self, count: int) -> bytes: ...

    async def integers(self, count: int, low: int, high: int) -> list[int]: ...

    async def floats(self, count: int) -> list[float]: ...

    async def uuids(self, count: int) -> list[str]: ...

    async def status(self) -> dict[str, Any]: ...


# -- backends ---------------------------------------------------------------------------------


class ServiceBackend:
    """The gateway's in-process :class:`EntropyService`: same pool, no network hop.

    Bound to a caller (the API key the ``/mcp`` guard authenticated), every draw is charged
    to that key's byte budget through the gateway's one :class:`~qrng_dd.gateway.policy.Policy`,
    exactly as the REST route would charge it; the guard already charged the request.
    """

    def __init__(self, service: EntropyService, caller: str | None = None) -> None:
        self.service = service
        self.caller = caller

    def bind(self, caller: str | None) -> ServiceBackend:
        return self if caller == self.caller else ServiceBackend(self.service, caller)

    def _charge(self, nbytes: int) -> None:
        if self.caller is None:
            return
        try:
            self.service.policy.admit(self.caller, nbytes, request=False)
        except Problem as problem:
            raise BackendError("rate_limited", problem.detail, problem.retry_after) from None

    def _short(self, err: EntropyExhaustedError) -> BackendError:
        return BackendError(
            "short",
            f"the pool holds {err.available} bytes, this request needs {err.requested}; "
            "nothing was taken",
            self.service.retry_after(),
        )

    def _call(self, fn: Callable[[], T]) -> T:
        # The service is synchronous and runs on this event loop: each call is atomic (P3).
        try:
            return fn()
        except EntropyExhaustedError as err:
            raise self._short(err) from None

    async def random_bytes(self, count: int) -> bytes:
        limit = self.service.settings.max_request_bytes
        if count > limit:
            raise BackendError("refused", f"this gateway serves at most {limit} bytes a request")
        self._charge(count)
        return self._call(lambda: self.service.take(count))

    async def integers(self, count: int, low: int, high: int) -> list[int]:
        self._charge(BYTES_PER_INTEGER * count)
        return self._call(lambda: self.service.integers(count, low, high))

    async def floats(self, count: int) -> list[float]:
        self._charge(BYTES_PER_FLOAT * count)
        return self._call(lambda: self.service.floats(count))

    async def uuids(self, count: int) -> list[str]:
        self._charge(BYTES_PER_UUID * count)
        return self._call(lambda: self.service.uuids(count))

    async def status(self) -> dict[str, Any]:
        return self.service.status()


class HttpBackend:
    """A gateway's REST API over one pooled HTTP client. Use as ``async with``."""

    def __init__(
        self,
        gateway_url: str,
        api_key: str,
        timeout: float = 10.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.gateway_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"qrng-dd-mcp/{__version__}",
            },
            timeout=httpx.Timeout(timeout),
            limits=_LIMITS,
            follow_redirects=False,
            transport=transport,
        )

    def bind(self, caller: str | None) -> HttpBackend:
        """The gateway charges the key this backend sends, whoever asked the MCP server."""
        return self

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    async def _get(
        self, path: str, params: Mapping[str, str | int] | None = None
    ) -> httpx.Response:
        try:
            response = await self._client.get(path, params=params)
        except httpx.TimeoutException as err:
            msg = f"the gateway at {self.gateway_url} did not answer within {self.timeout:g} s"
            raise BackendError("unreachable", msg) from err
        except httpx.HTTPError as err:
            reason = str(err) or type(err).__name__
            raise BackendError("unreachable", f"cannot reach {self.gateway_url}: {reason}") from err
        if response.is_success:
            return response
        detail = _problem_detail(response)
        retry = _retry_after(response)
        code = response.status_code
        if code == 503:
            raise BackendError("short", detail, retry)
        if code == 429:
            raise BackendError("rate_limited", detail, retry)
        if code == 401:
            raise BackendError("unauthorized", detail)
        if code == 400:
            raise BackendError("refused", detail)
        raise BackendError("gateway", f"HTTP {code}: {detail}")

    async def random_bytes(self, count: int) -> bytes:
        response = await self._get("/api/random", {"bytes": count, "encoding": "hex"})
        try:
            data = bytes.fromhex(response.text.strip())
        except ValueError:
            raise _malformed("/api/random", "not hex text") from None
        if len(data) != count:
            raise _malformed("/api/random", f"{len(data)} bytes instead of {count}")
        return data

    async def integers(self, count: int, low: int, high: int) -> list[int]:
        response = await self._get("/api/integers", {"count": count, "min": low, "max": high})
        values = _json_list(response, "/api/integers", count)
        if not all(type(v) is int and low <= v <= high for v in values):
            raise _malformed("/api/integers", f"a value is not an integer in [{low}, {high}]")
        return values

    async def floats(self, count: int) -> list[float]:
        response = await self._get("/api/floats", {"count": count})
        values = _json_list(response, "/api/floats", count)
        if not all(type(v) in (int, float) and 0 <= v < 1 for v in values):
            raise _malformed("/api/floats", "a value is not a number in [0, 1)")
        return [float(v) for v in values]

    async def uuids(self, count: int) -> list[str]:
        response = await self._get("/api/uuid", {"count": count})
        values = [response.text.strip()] if count == 1 else _json_list(response, "/api/uuid", count)
        for value in values:
            if not isinstance(value, str) or not _is_uuid4(value):
                raise _malformed("/api/uuid", "a value is not a version-4 UUID")
        return [str(v) for v in values]

    async def status(self) -> dict[str, Any]:
        response = await self._get("/api/status")
        try:
            document = response.json()
        except ValueError:
            raise _malformed("/api/status", "not JSON") from None
        if not isinstance(document, dict):
            raise _malformed("/api/status", "not a JSON object")
        return document


def _problem_detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return detail[:500]
    return response.text.strip()[:200] or response.reason_phrase


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None


def _malformed(route: str, what: str) -> BackendError:
    return BackendError("gateway", f"the gateway's answer to {route} was refused: {what}")


def _json_list(response: httpx.Response, route: str, count: int) -> list[Any]:
    try:
        values = response.json()
    except ValueError:
        raise _malformed(route, "not JSON") from None
    if not isinstance(values, list) or len(values) != count:
        raise _malformed(route, f"not a JSON array of {count} values")
    return values


def _is_uuid4(text: str) -> bool:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return False
    return value.version == 4 and value.variant == uuid.RFC_4122 and str(value) == text


# -- results ----------------------------------------------------------------------------------


class RandomBytes(BaseModel):
    """Random bytes, encoded as text."""

    count: int = Field(description="number of random bytes")
    encoding: Literal["hex", "base64"]
    data: str = Field(description="the bytes: lowercase hex, or standard base64 with padding")


class RandomIntegers(BaseModel):
    """Uniform random integers in [min, max]."""

    count: int
    min: int
    max: int
    values: list[int]


class RandomFloats(BaseModel):
    """Uniform random floats in [0, 1), 53 random bits each."""

    count: int
    values: list[float]


class RandomUuids(BaseModel):
    """Random RFC 9562 version-4 UUIDs."""

    count: int
    uuids: list[str]


class GatewayStatus(BaseModel):
    """The gateway's health: pool fill, sources, refusals, warnings."""

    status: str = Field(description="healthy, degraded or unhealthy")
    gateway_id: str | None = None
    buffer_fill_percent: float
    buffer_bytes_available: int
    buffer_capacity_bytes: int
    oldest_data_age_seconds: float
    uptime_seconds: float
    total_requests_served: int
    total_bytes_served: int
    sources: dict[str, Any] = Field(description="per collector: sequence, gaps, appliance health")
    rejected_packets: dict[str, int] = Field(description="refused packets by reason")
    warnings: list[str]
    quarantined: list[str] = Field(description="appliances failing their health tests")


# -- tools ------------------------------------------------------------------------------------

ByteCount = Annotated[
    int, Field(ge=1, le=MAX_BYTES, description=f"How many random bytes, 1 to {MAX_BYTES}.")
]
Encoding = Annotated[
    Literal["hex", "base64"],
    Field(description="hex (lowercase) or base64 (standard, padded)."),
]
IntCount = Annotated[
    int, Field(ge=1, le=MAX_COUNT, description=f"How many integers, 1 to {MAX_COUNT}.")
]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Low = Annotated[Int64, Field(description="Smallest value (inclusive), signed 64-bit; <= max.")]
High = Annotated[Int64, Field(description="Largest value (inclusive), signed 64-bit; >= min.")]
FloatCount = Annotated[
    int, Field(ge=1, le=MAX_COUNT, description=f"How many floats, 1 to {MAX_COUNT}.")
]
UuidCount = Annotated[
    int, Field(ge=1, le=MAX_UUIDS, description=f"How many UUIDs, 1 to {MAX_UUIDS}.")
]

_INSTRUCTIONS: Final = (
    "True random numbers from quantum random number generators, carried through a one-way "
    "data diode. Every value is drawn from real quantum entropy and served once. When the "
    "gateway is short of entropy, rate limited or unreachable, a tool returns an error that "
    "says why; never substitute pseudo-random numbers for a failed call."
)
_DRAWS: Final = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                open_world_hint=True)  # fmt: skip
_READS: Final = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True)


def quarantined_sources(status: Mapping[str, Any]) -> list[str]:
    """``collector/appliance`` names that a gateway status reports as quarantined."""
    found: set[str] = set()
    for warning in status.get("warnings") or ():
        if isinstance(warning, str) and (match := _QUARANTINE.search(warning)):
            found.add(match.group(1))
    sources = status.get("sources")
    if isinstance(sources, dict):
        for source, entry in sources.items():
            appliances = entry.get("appliances") if isinstance(entry, dict) else None
            if isinstance(appliances, dict):
                found.update(
                    f"{source}/{name}"
                    for name, state in appliances.items()
                    if state == "quarantined"
                )
    return sorted(found)


async def _explain(backend: Backend, err: BackendError) -> str:
    """The message a model reads: what happened, why, and what to do."""
    wait = f" Retry in {err.retry_after} s." if err.retry_after else ""
    if err.kind == "short":
        text = (
            f"The gateway is short of entropy: {err.detail}. No numbers were returned, and none "
            f"may be made up in their place.{wait}"
        )
        with contextlib.suppress(BackendError):
            if names := quarantined_sources(await backend.status()):
                text += (
                    f" Quarantined source: {', '.join(names)} failed its SP 800-90B health tests "
                    "and supplies no entropy until it recovers; tell the operator."
                )
        return text
    if err.kind == "rate_limited":
        return f"Rate limited by the gateway: {err.detail}.{wait}"
    if err.kind == "unauthorized":
        return (
            f"The gateway refused the API key: {err.detail}. Check QRNG_GATEWAY_API_KEY (it must "
            "be one of the gateway's QRNG_API_KEYS)."
        )
    if err.kind == "unreachable":
        return f"The gateway is unreachable: {err.detail}. Check QRNG_GATEWAY_URL."
    if err.kind == "refused":
        return f"Bad arguments: {err.detail}."
    return f"The gateway failed: {err.detail}."


async def _ask(backend: Backend, call: Awaitable[T]) -> T:
    try:
        return await call
    except BackendError as err:
        raise ToolError(await _explain(backend, err)) from None


def _result(model: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=model.model_dump(mode="json"),
    )


def _bytes_result(data: bytes, encoding: Literal["hex", "base64"]) -> CallToolResult:
    text = data.hex() if encoding == "hex" else base64.b64encode(data).decode("ascii")
    model = RandomBytes(count=len(data), encoding=encoding, data=text)
    return _result(model, f"{len(data)} random bytes ({encoding}):\n{text}")


def _bound(backend: Backend, ctx: Context) -> Backend:
    """``backend`` for the API key the HTTP guard authenticated for this request, if any."""
    try:
        request = ctx.request_context.request
    except ValueError:  # no request: an in-process session
        return backend
    scope = getattr(request, "scope", None)
    caller = scope.get(CALLER_SCOPE_KEY) if isinstance(scope, dict) else None
    return backend.bind(caller if isinstance(caller, str) else None)


def create_server(backend: Backend) -> MCPServer[Any]:
    """The MCP server with the seven entropy tools, all answered by ``backend``."""
    server: MCPServer[Any] = MCPServer(
        "qrng-dd", title="Quantum random numbers", instructions=_INSTRUCTIONS, version=__version__
    )

    @server.tool(annotations=_DRAWS)
    async def get_random_bytes(
        ctx: Context, count: ByteCount = 32, encoding: Encoding = "hex"
    ) -> Annotated[CallToolResult, RandomBytes]:
        """Quantum random bytes, as hex or base64 text. Each byte is served once, never reused."""
        caller = _bound(backend, ctx)
        return _bytes_result(await _ask(caller, caller.random_bytes(count)), encoding)

    @server.tool(annotations=_DRAWS)
    async def get_random_hex(
        ctx: Context, count: ByteCount = 32
    ) -> Annotated[CallToolResult, RandomBytes]:
        """Quantum random bytes as lowercase hex (2 characters per byte)."""
        caller = _bound(backend, ctx)
        return _bytes_result(await _ask(caller, caller.random_bytes(count)), "hex")

    @server.tool(annotations=_DRAWS)
    async def get_random_base64(
        ctx: Context, count: ByteCount = 32
    ) -> Annotated[CallToolResult, RandomBytes]:
        """Quantum random bytes as standard base64 with padding."""
        caller = _bound(backend, ctx)
        return _bytes_result(await _ask(caller, caller.random_bytes(count)), "base64")

    @server.tool(annotations=_DRAWS)
    async def get_random_integers(
        ctx: Context, count: IntCount = 10, min: Low = 0, max: High = 100
    ) -> Annotated[CallToolResult, RandomIntegers]:
        """Uniform quantum random integers in [min, max], both inclusive (no modulo bias)."""
        if min > max:
            msg = f"Bad arguments: min ({min}) must not be greater than max ({max})."
            raise ToolError(msg)
        caller = _bound(backend, ctx)
        values = await _ask(caller, caller.integers(count, min, max))
        model = RandomIntegers(count=count, min=min, max=max, values=values)
        text = f"{count} random integers in [{min}, {max}]: {', '.join(map(str, values))}"
        return _result(model, text)

    @server.tool(annotations=_DRAWS)
    async def get_random_floats(
        ctx: Context, count: FloatCount = 10
    ) -> Annotated[CallToolResult, RandomFloats]:
        """Uniform quantum random floats in [0, 1), 53 random bits each."""
        caller = _bound(backend, ctx)
        values = await _ask(caller, caller.floats(count))
        text = f"{count} random floats in [0, 1): {', '.join(map(repr, values))}"
        return _result(RandomFloats(count=count, values=values), text)

    @server.tool(annotations=_DRAWS)
    async def get_random_uuid(
        ctx: Context, count: UuidCount = 1
    ) -> Annotated[CallToolResult, RandomUuids]:
        """Quantum random version-4 UUIDs (RFC 9562)."""
        caller = _bound(backend, ctx)
        values = await _ask(caller, caller.uuids(count))
        return _result(RandomUuids(count=count, uuids=values), "\n".join(values))

    @server.tool(annotations=_READS)
    async def get_status() -> Annotated[CallToolResult, GatewayStatus]:
        """The gateway's health: pool fill, entropy sources (and any quarantined), warnings."""
        document = await _ask(backend, backend.status())
        try:
            model = GatewayStatus.model_validate(
                {**document, "quarantined": quarantined_sources(document)}
            )
        except ValidationError:
            msg = "The gateway failed: its status document has an unexpected shape."
            raise ToolError(msg) from None
        lines = [
            f"Gateway {model.gateway_id or ''!r} is {model.status}: pool "
            f"{model.buffer_fill_percent:.1f}% full ({model.buffer_bytes_available} of "
            f"{model.buffer_capacity_bytes} bytes), {len(model.sources)} source(s).",
            *(f"Warning: {w}" for w in model.warnings),
        ]
        return _result(model, "\n".join(lines))

    return server


# -- HTTP guard -------------------------------------------------------------------------------


def origin_allowed(origin: str, allowed: Iterable[str] = ()) -> bool:
    """True for a loopback origin (any port) or one listed in ``allowed``."""
    if origin.rstrip("/") in {entry.rstrip("/") for entry in allowed}:
        return True
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and host in _LOCAL_HOSTS


class _Guard:
    """ASGI wrapper: Origin check (403), then the :class:`Policy`: credential (401), request
    bucket (429). The key it authenticated travels in the scope (:data:`CALLER_SCOPE_KEY`) so
    the tools charge draws to it; every answer to it carries the policy's headers
    (``Cache-Control: no-store``, RateLimit)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy | None,
        allowed_origins: Sequence[str] = (),
        query_param: str | None = None,
    ) -> None:
        self.app = app
        self._policy = policy
        self._origins = tuple(allowed_origins)
        self._query_param = query_param

    def _query_key(self, scope: Scope) -> str | None:
        if self._query_param is None:
            return None
        raw: bytes = scope.get("query_string", b"")
        values = parse_qs(raw.decode("latin-1")).get(self._query_param)
        return values[0] if values else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(origin, self._origins):
            log.warning("mcp_origin_refused origin=%r", origin[:100])
            detail = "this Origin may not use the MCP endpoint (see QRNG_MCP_ALLOWED_ORIGINS)"
            await send_problem(send, Problem(403, "Forbidden", detail))
            return
        if self._policy is None:
            await self.app(scope, receive, send)
            return
        try:
            key = self._policy.authenticate(headers.get("authorization"), self._query_key(scope))
        except Problem as problem:
            await send_problem(send, problem)
            return
        try:
            # The gateway's own per-key buckets: an MCP request counts like a REST request.
            self._policy.admit(key)
        except Problem as problem:
            await send_problem(send, problem, self._policy.raw_headers(key))
            return
        extra = self._policy.raw_headers(key)

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in extra}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app({**scope, CALLER_SCOPE_KEY: key}, receive, send_with_policy)


async def send_problem(
    send: Send, problem: Problem, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """``problem`` as a whole ASGI response, rendered as every other route renders it."""
    body = problem.body()
    headers = [*extra, *problem.raw_headers(body)]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _security() -> TransportSecuritySettings:
    # The SDK's own Host allow-list would refuse every name but localhost when the server is
    # bound to a public address; _Guard checks Origin (the DNS-rebinding defence) instead.
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def create_http_app(
    server: MCPServer[Any], *, auth_token: str | None = None, allowed_origins: Sequence[str] = ()
) -> ASGIApp:
    """Streamable HTTP at ``/mcp``, guarded by Origin and (when given) a bearer token.

    The returned app has a lifespan that runs the SDK's session manager.
    """
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=_security(),
        max_sessions=MAX_SESSIONS,
        max_request_body_size=MAX_BODY_BYTES,
    )
    policy = Policy([auth_token]) if auth_token else None
    return _Guard(app, policy=policy, allowed_origins=allowed_origins)


def mount_in_gateway(
    service: EntropyService,
) -> tuple[BaseRoute, Callable[[], AbstractAsyncContextManager[None]]]:
    """The gateway's ``/mcp`` route over its own service, and the lifespan it must enter.

    The route is a plain :class:`~starlette.routing.Route` at exactly ``/mcp`` (a ``Mount``
    would redirect ``/mcp`` to ``/mcp/``, which MCP clients do not follow for a POST). It asks
    for one of the gateway's API keys (``Authorization: Bearer KEY`` or ``?api_key=KEY``).
    """
    server = create_server(ServiceBackend(service))
    # Builds the SDK's session manager; its Starlette wrapper is not used, only the manager.
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=_security(),
        max_sessions=MAX_SESSIONS,
        max_request_body_size=MAX_BODY_BYTES,
    )
    manager = server.session_manager
    guard = _Guard(manager.handle_request, policy=service.policy, query_param="api_key")
    return Route(MCP_PATH, endpoint=guard), manager.run


# -- standalone -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``qrng-dd mcp`` options."""
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default; for desktop apps) or streamable HTTP at /mcp",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="HTTP address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"HTTP port (default {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML file (section mcp:); the environment wins"
    )


def run(args: argparse.Namespace) -> int:
    """``qrng-dd mcp``: serve the tools over stdio or streamable HTTP.

    Raises:
        ConfigError: invalid settings (printed as one line by the CLI).
    """
    from qrng_dd import logs
    from qrng_dd.config import McpSettings, load

    settings = load(McpSettings, config_file=args.config)
    # stdout is the stdio transport: every log line goes to stderr.
    logs.configure(settings.log_format, settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    key = settings.gateway_api_key.get_secret_value()
    if args.transport == "stdio":
        anyio.run(_serve_stdio, settings.gateway_url, key)
        return 0
    token = settings.mcp_auth_token.get_secret_value() if settings.mcp_auth_token else None
    if token is None and args.host not in _LOCAL_HOSTS:
        log.warning("mcp_http_without_token host=%s (set QRNG_MCP_AUTH_TOKEN)", args.host)
    anyio.run(
        _serve_http, settings.gateway_url, key, token, settings.mcp_allowed_origins, args.host,
        args.port,
    )  # fmt: skip
    return 0


async def _serve_stdio(gateway_url: str, api_key: str) -> None:
    async with HttpBackend(gateway_url, api_key) as backend:
        log.info("mcp_started transport=stdio gateway=%s", gateway_url)
        await create_server(backend).run_stdio_async()


async def _serve_http(
    gateway_url: str,
    api_key: str,
    token: str | None,
    origins: list[str],
    host: str,
    port: int,
) -> None:
    import uvicorn

    async with HttpBackend(gateway_url, api_key) as backend:
        app = create_http_app(create_server(backend), auth_token=token, allowed_origins=origins)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        log.info("mcp_started transport=http url=http://%s:%s%s gateway=%s", host, port,
                 MCP_PATH, gateway_url)  # fmt: skip
        await uvicorn.Server(config).serve()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qrng_dd.mcp.server``: the same as ``qrng-dd mcp``."""
    from qrng_dd.errors import ConfigError

    parser = argparse.ArgumentParser(prog="qrng-dd mcp", description="serve the MCP tools")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as err:
        print(f"qrng-dd mcp: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
