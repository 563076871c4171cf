"""What a route is, independent of the front that serves it (DESIGN §5).

A :class:`Route` states everything once: path, methods, parameters with their limits and
defaults, byte cost, auth, handler and what it answers. The ASGI front
(:mod:`qrng_dd.gateway.front`), the OpenAPI document (:mod:`qrng_dd.gateway.openapi`) and the
MCP tools' input schemas (:mod:`qrng_dd.mcp.tools`) are all made from the table in
:mod:`qrng_dd.gateway.routes`, so a limit cannot be stated twice, or differently.

Some limits depend on the gateway's configuration (``QRNG_MAX_REQUEST_BYTES``, the pool's
capacity): such a :class:`Param` takes a function of the settings, and :meth:`Route.bind`
resolves it once when the front is built, never per request. A request that could never be
served is a 400 naming the parameter, not a 503 that says "retry" forever: a limit never
exceeds what the pool can hold, and :meth:`Route.cost_of` refuses a combination of values
that reads more than that (with rejection sampling, more than its cost).

Parameters are parsed strictly: an integer is an optional sign and digits, nothing else, and
its range is checked before any entropy is touched, so a bad request never drains the pool.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from qrng_dd.gateway.problem import PROBLEM, Problem, bad_parameter

if TYPE_CHECKING:
    from qrng_dd.config import GatewaySettings
    from qrng_dd.gateway.service import EntropyService

JSON: Final = "application/json"
TEXT: Final = "text/plain"
OCTET: Final = "application/octet-stream"
_INT: Final = re.compile(r"[+-]?[0-9]{1,30}")

Params = Mapping[str, str]
#: Parsed arguments; read-only, so the front may hand the same ones to many calls.
Args = Mapping[str, Any]
#: A limit or default: a number, or a function of this gateway's settings.
Setting = int | str | Callable[["GatewaySettings"], int]


class Reply:
    """One answer: body, media type, status, the route's own headers and the policy's.

    :meth:`raw_headers` gives the ASGI header list: the policy's pairs first (``extra``), then
    the route's, then length and type; ``charset=utf-8`` is appended to ``text/*``. Statuses
    are never 1xx/204/304.
    """

    __slots__ = ("body", "extra", "headers", "media_type", "status")

    def __init__(
        self,
        body: bytes,
        media_type: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.body = body
        self.media_type = media_type
        self.status = status
        self.headers = headers
        #: The policy's pairs for the caller (no-store, RateLimit), sent first, already bytes.
        self.extra: Sequence[tuple[bytes, bytes]] = ()

    @classmethod
    def json(cls, content: Any, status: int = 200) -> Reply:
        return cls(_JSON_ENCODER.encode(content).encode("utf-8"), JSON, status)

    @classmethod
    def problem(cls, problem: Problem) -> Reply:
        return cls(problem.body(), PROBLEM, problem.status, problem.headers)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        length = (b"content-length", b"%d" % len(self.body))
        if not self.headers:
            return [*self.extra, length, _content_type(self.media_type)]
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        keys = {k for k, _ in raw}
        if b"content-length" not in keys:
            raw.append(length)
        if b"content-type" not in keys:
            raw.append(_content_type(self.media_type))
        return [*self.extra, *raw]


_CONTENT_TYPES: dict[str, tuple[bytes, bytes]] = {}


def _content_type(media_type: str) -> tuple[bytes, bytes]:
    """The ``content-type`` header for ``media_type`` (cached)."""
    header = _CONTENT_TYPES.get(media_type)
    if header is None:
        value = media_type
        if value.startswith("text/") and "charset=" not in value.lower():
            value += "; charset=utf-8"
        header = _CONTENT_TYPES[media_type] = (b"content-type", value.encode("latin-1"))
    return header


#: What an entropy route may refuse with (the text is the OpenAPI document's).
ENTROPY_ERRORS: Final[Mapping[int, str]] = {
    400: "A parameter is missing, malformed or out of range",
    401: "Missing or unknown API key",
    429: "Rate limited; see Retry-After and the RateLimit fields; nothing was charged",
    503: "Short of entropy; nothing was taken; see Retry-After",
}


# json.dumps with these options builds a new encoder per call; one shared encoder is the same.
_JSON_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
)


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter: an integer in ``[low, high]``, one of ``choices``, a finite
    ``number`` in ``[low, high]``, or ``text`` of ``low`` to ``high`` characters.

    ``cap`` is the API's own maximum, for a ``high`` that depends on the settings: what a
    client that does not know the gateway's configuration (the MCP server) states.
    """

    name: str
    description: str
    default: Setting | None = None
    low: int = 0
    high: Setting = 0
    choices: tuple[str, ...] = ()
    cap: int | None = None
    kind: Literal["integer", "number", "text"] = "integer"

    @property
    def maximum(self) -> int:
        """``high`` of a bound parameter."""
        if not isinstance(self.high, int):
            raise TypeError(f"'{self.name}' is not bound to settings")
        return self.high

    def bind(self, settings: GatewaySettings | None) -> Param:
        """This parameter with its limits for ``settings`` (``None``: the API's own caps)."""
        high, default = self.high, self.default
        if settings is not None:
            high = high(settings) if callable(high) else high
            default = default(settings) if callable(default) else default
            return replace(self, high=high, default=default)
        if callable(high):
            high = self.cap if self.cap is not None else high
        if callable(high) or callable(default):
            raise TypeError(f"'{self.name}' depends on the settings")
        return replace(self, high=high)

    def parse(self, params: Params) -> int | float | str:
        """The value in ``params``, or the default. Raises: Problem 400 naming the parameter."""
        text = params.get(self.name)
        if self.kind != "integer":
            return self._parse_other(text)
        if self.choices:
            if text is None:
                if self.default is None:
                    raise bad_parameter(f"'{self.name}' is required: {', '.join(self.choices)}")
                return str(self.default)
            if text not in self.choices:
                raise bad_parameter(
                    f"'{self.name}' must be one of {', '.join(self.choices)}, got {text[:40]!r}"
                )
            return text
        low, high = self.low, self.high
        if text is None:
            if self.default is None:
                raise bad_parameter(f"'{self.name}' is required ({low}..{high})")
            return self.default  # type: ignore[return-value]  # bound: an int
        # Plain ASCII digits are the common case and need no regex (about 0.15 µs each).
        if not (text.isascii() and text.isdigit() and len(text) <= 30) and not _INT.fullmatch(text):
            raise bad_parameter(
                f"'{self.name}' must be an integer between {low} and {high}, got {text[:40]!r}"
            )
        value = int(text)
        if not low <= value <= high:  # type: ignore[operator]  # bound: an int
            raise bad_parameter(f"'{self.name}' must be between {low} and {high}, got {text[:40]}")
        return value

    def _parse_other(self, text: str | None) -> float | str:
        low, high = self.low, self.maximum
        if text is None:
            if self.default is None:
                raise bad_parameter(f"'{self.name}' is required")
            return self.default  # type: ignore[return-value]  # bound: not a function
        if self.kind == "text":
            if not low <= len(text) <= high:
                raise bad_parameter(
                    f"'{self.name}' must be {low} to {high} characters long, got {len(text)}"
                )
            return text
        try:
            value = float(text) if len(text) <= 40 else math.nan
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN and the infinities fail here too
            raise bad_parameter(
                f"'{self.name}' must be a number between {low} and {high}, got {text[:40]!r}"
            )
        return value


@dataclass(slots=True)
class Call:
    """One request as a handler sees it: parsed arguments, the caller's key, the service."""

    service: EntropyService
    args: Args
    key: str
    #: The routes this front serves (for the OpenAPI document).
    routes: Sequence[Route] = ()
    #: ``POST /push`` only: ``Content-Length`` and the body's chunks.
    content_length: str | None = None
    body: AsyncIterable[bytes] | None = None


Handler = Callable[[Call], Reply]
BodyHandler = Callable[[Call], Awaitable[Reply]]


async def read_body(call: Call, limit: int) -> bytes | None:
    """A body route's request body, or None as soon as it is over ``limit`` bytes: by its
    ``Content-Length`` before a byte is read, else while it streams (never buffered whole).

    A ``Content-Length`` that is not plain ASCII digits is left to the stream: ``"²"`` is a
    digit to ``str.isdigit`` but not to ``int``, and ``int`` of thousands of digits raises.
    """
    declared = call.content_length or ""
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        return None
    assert call.body is not None
    parts: list[bytes] = []
    size = 0
    async for chunk in call.body:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass(frozen=True, slots=True)
class Content:
    """One media type of a successful answer, for the OpenAPI document."""

    media_type: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Route:
    """One route: everything the front, the OpenAPI document and MCP need to know.

    ``cost`` is the bytes one call draws, charged with the request to the caller's budget
    before the handler runs; ``None`` charges nothing (operations routes). ``bound``, for a
    route that draws by rejection sampling, is the most bytes a call may read from the pool
    (see :meth:`cost_of`). ``errors`` are the problem statuses it may answer, each with the
    text the OpenAPI document gives it.
    """

    name: str
    path: str
    methods: tuple[str, ...]
    summary: str
    handler: Handler | None = None
    body_handler: BodyHandler | None = None
    params: tuple[Param, ...] = ()
    auth: bool = True
    cost: Callable[[Args], int] | None = None
    ok: str = "OK"
    content: tuple[Content, ...] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    #: Statuses other than 200 answered with the same ``content`` (``/health``'s 503).
    also: Mapping[int, str] = field(default_factory=dict)
    request_body: Content | None = None
    #: Checks across parameters (``min <= max``), run after each is parsed and before
    #: anything is charged. Raises: Problem 400.
    check: Callable[[Args], None] | None = None
    #: Where the route is mounted, from the settings (a compatibility API's prefix); the
    #: path is appended to it when the route is bound to settings.
    prefix: Callable[[GatewaySettings], str] | None = None
    #: The pool's size (``QRNG_BUFFER_SIZE``) once bound to settings: see :meth:`cost_of`.
    capacity: int | None = None
    #: The most bytes a call with these arguments reads, when rejection sampling may read
    #: more than ``cost``: a bound exceeded with negligible probability
    #: (:func:`qrng_dd.gateway.derive.read_bound`). ``None``: it reads exactly ``cost``.
    bound: Callable[[Args], int] | None = None

    def param(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def bind(self, settings: GatewaySettings | None) -> Route:
        """This route with its parameters' limits (and its prefix) for ``settings``."""
        path, capacity = self.path, None
        if settings is not None:
            capacity = settings.buffer_size
            if self.prefix is not None:
                path = self.prefix(settings) + path
        params = tuple(p.bind(settings) for p in self.params)
        return replace(self, path=path, params=params, capacity=capacity)

    def parse(self, params: Params) -> Args:
        """Every parameter parsed and range-checked. Raises: Problem 400."""
        args: dict[str, Any] = {}
        for param in self.params:  # a loop: no comprehension frame on the hot path (3.11)
            args[param.name] = param.parse(params)
        if self.check is not None:
            self.check(args)
        return args

    def cost_of(self, args: Args) -> int | None:
        """The bytes a call with ``args`` is charged, None for a route that draws nothing.

        What is checked against the pool's capacity is the most the call may read: its cost,
        or its ``bound`` where rejection sampling reads more (an integer range that does not
        divide 2^64, an alphabet that does not divide 256). Comparing only the cost would
        pass a request costed at the capacity whose draws overrun even a full pool, often
        or nearly always: charged and told "short, retry" (503) each time, forever. The
        bound is exceeded with a chance below 2^-38, so a request that passes is served by
        a full pool, and whether it passes depends on the request alone, never on the
        bytes the pool happens to hold.

        Raises:
            Problem: 400 naming the parameters when that is more than the pool can ever hold.
        """
        if self.cost is None:
            return None
        cost = self.cost(args)
        if self.capacity is None:
            return cost
        most = cost if self.bound is None else max(cost, self.bound(args))
        if most > self.capacity:
            named = ", ".join(f"'{p.name}'" for p in self.params if not p.choices)
            needs = (
                f"needs {cost} bytes of entropy"
                if most == cost
                else f"may read up to {most} bytes of entropy (rejection sampling draws again "
                "what it refuses)"
            )
            raise bad_parameter(
                f"{named}: this request {needs}, more than this gateway's pool can ever hold "
                f"({self.capacity} bytes, QRNG_BUFFER_SIZE); ask for less"
            )
        return cost
