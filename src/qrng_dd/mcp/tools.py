"""The MCP tools, their argument schemas (from the gateway's route table) and results."""

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
from qrng_dd.gateway.shaped import ALPHANUMERIC, MAX_ITEMS
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


class RandomValues(BaseModel):
    """Values of one shape: gaussians, strings, a shuffle or a sample."""

    count: int
    values: list[float] | list[int] | list[str]


class DiceRoll(BaseModel):
    """Fair dice rolled in dice notation."""

    notation: str
    rolls: list[int]
    modifier: int
    total: int


class Passwords(BaseModel):
    """Passwords, each character uniform over the charset."""

    passwords: list[str]
    charset: str
    entropy_bits: float = Field(description="length * log2(charset size), per password")


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
    """The REST route's parameter as a pydantic field: the same limits and text."""
    param = BY_NAME[route].bind(None).param(name)
    text = f"{param.description[0].upper()}{param.description[1:]}."
    if param.kind == "text":
        return Field(min_length=param.low, max_length=param.maximum, description=text)
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
GaussCount = Annotated[int, _arg("gaussians", "count")]
Mean = Annotated[float, _arg("gaussians", "mean")]
StdDev = Annotated[float, _arg("gaussians", "stddev")]
StringCount = Annotated[int, _arg("strings", "count")]
StringLength = Annotated[int, _arg("strings", "length")]
Alphabet = Annotated[str, _arg("strings", "alphabet")]
Population = Annotated[int, _arg("sample", "n")]
Picks = Annotated[int, _arg("sample", "k")]
Notation = Annotated[str, _arg("dice", "notation")]
PasswordCount = Annotated[int, _arg("passwords", "count")]
PasswordLength = Annotated[int, _arg("passwords", "length")]
Charset = Annotated[
    Literal["alphanumeric", "printable", "letters", "digits", "hex"],
    Field(description="The characters to draw from."),
]
Items = Annotated[
    list[str],
    Field(min_length=1, max_length=MAX_ITEMS, description="The items, none holding a comma."),
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


M = TypeVar("M", bound=BaseModel)


def _model(cls: type[M], document: Any) -> M:
    """``document`` as ``cls``; an answer of another shape is the gateway's failure."""
    try:
        return cls.model_validate(document)
    except ValidationError:
        msg = "The gateway failed: its answer has an unexpected shape."
        raise ToolError(msg) from None


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
    """The MCP server with the entropy tools, all answered by ``backend``."""
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

    async def values(ctx: Context, route: str, args: dict[str, Any], what: str) -> CallToolResult:
        caller = _bound(backend, ctx)
        drawn = await _ask(caller, caller.shape(route, args))
        count = len(drawn) if isinstance(drawn, list) else 0
        model = _model(RandomValues, {"count": count, "values": drawn})
        return _result(model, f"{what}: {', '.join(map(str, drawn))}")

    @server.tool(annotations=_DRAWS)
    async def get_random_gaussians(
        ctx: Context, count: GaussCount = 10, mean: Mean = 0.0, stddev: StdDev = 1.0
    ) -> Annotated[CallToolResult, RandomValues]:
        """Normally distributed quantum random numbers (inverse normal CDF, exact in doubles)."""
        args = {"count": count, "mean": mean, "stddev": stddev}
        return await values(ctx, "gaussians", args, f"{count} values of N({mean}, {stddev}²)")

    @server.tool(annotations=_DRAWS)
    async def get_random_strings(
        ctx: Context, count: StringCount = 10, length: StringLength = 16,
        alphabet: Alphabet = ALPHANUMERIC,
    ) -> Annotated[CallToolResult, RandomValues]:  # fmt: skip
        """Quantum random strings, each character uniform over the alphabet (no bias)."""
        args = {"count": count, "length": length, "alphabet": alphabet}
        return await values(ctx, "strings", args, f"{count} random strings")

    @server.tool(annotations=_DRAWS)
    async def shuffle_items(ctx: Context, items: Items) -> Annotated[CallToolResult, RandomValues]:
        """The items in a uniformly random order (a quantum Fisher-Yates shuffle)."""
        if any("," in item for item in items):
            raise ToolError("Bad arguments: an item holds a comma.")
        return await values(ctx, "shuffle", {"items": ",".join(items)}, "Shuffled")

    @server.tool(annotations=_DRAWS)
    async def draw_lottery(
        ctx: Context, n: Population, k: Picks = 1
    ) -> Annotated[CallToolResult, RandomValues]:
        """k distinct numbers of 1..n in the order drawn (a raffle or lottery draw)."""
        return await values(ctx, "sample", {"n": n, "k": k}, f"{k} of 1..{n}")

    @server.tool(annotations=_DRAWS)
    async def roll_dice(
        ctx: Context, notation: Notation = "1d6"
    ) -> Annotated[CallToolResult, DiceRoll]:
        """Fair dice in dice notation: 3d6, 1d20+5, 2d8-1."""
        caller = _bound(backend, ctx)
        model = _model(DiceRoll, await _ask(caller, caller.shape("dice", {"notation": notation})))
        return _result(model, f"{notation}: {model.rolls} {model.modifier:+d} = {model.total}")

    @server.tool(annotations=_DRAWS)
    async def generate_passwords(
        ctx: Context, count: PasswordCount = 1, length: PasswordLength = 20,
        charset: Charset = "alphanumeric",
    ) -> Annotated[CallToolResult, Passwords]:  # fmt: skip
        """Passwords from quantum randomness; entropy_bits says how strong each is."""
        caller = _bound(backend, ctx)
        args = {"count": count, "length": length, "charset": charset}
        model = _model(Passwords, await _ask(caller, caller.shape("passwords", args)))
        text = f"{count} password(s), {model.entropy_bits} bits each:\n" + "\n".join(
            model.passwords
        )
        return _result(model, text)

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
