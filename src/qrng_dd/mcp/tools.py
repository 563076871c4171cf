"""The seven MCP tools, their argument schemas (from the gateway's route table) and results."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, Final, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from qrng_dd import __version__
from qrng_dd.gateway.routes import BY_NAME
from qrng_dd.mcp.backends import Backend, BackendError

log = logging.getLogger(__name__)


T = TypeVar("T")
#: Where the HTTP guard leaves the API key it authenticated, for the tools to charge.
CALLER_SCOPE_KEY: Final = "qrng_dd.api_key"

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


def _arg(route: str, name: str) -> Any:
    """The REST route's integer parameter as a pydantic field: the same limits and text."""
    param = BY_NAME[route].bind(None).param(name)
    text = f"{param.description[0].upper()}{param.description[1:]}."
    return Field(ge=param.low, le=param.maximum, description=text)


# Every limit a model reads in a tool's schema is the REST route's (the route table).
ByteCount = Annotated[int, _arg("random", "bytes")]
Encoding = Annotated[
    Literal["hex", "base64"],
    Field(description="hex (lowercase) or base64 (standard, padded)."),
]
IntCount = Annotated[int, _arg("integers", "count")]
Low = Annotated[int, _arg("integers", "min")]
High = Annotated[int, _arg("integers", "max")]
FloatCount = Annotated[int, _arg("floats", "count")]
UuidCount = Annotated[int, _arg("uuid", "count")]

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
    """``collector/appliance`` names the gateway's status lists as quarantined."""
    names = status.get("quarantined")
    return sorted(n for n in names if isinstance(n, str)) if isinstance(names, list) else []


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
