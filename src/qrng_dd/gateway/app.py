"""The gateway's HTTP face: thin routes over :class:`EntropyService` (DESIGN §5).

Every route goes through :meth:`GatewayApp.respond` (``/push``: :meth:`~GatewayApp.respond_push`),
which does the shared work once: authentication (constant-time, key never logged), rate limits,
turning errors into ``application/problem+json``, the request metrics and the access log.
Handlers return a framework-free :class:`Reply`. :class:`FastFront` serves the hot routes as
raw ASGI and hands everything else to Starlette; no Starlette middleware is used: each layer
costs a share of a small request's time (DESIGN §11).

Parameters are parsed strictly: an integer is optional sign and digits, nothing else, and its
range is checked before any entropy is touched, so a bad request never drains the pool.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from qrng_dd.errors import EntropyExhaustedError, PacketError, PoolFullError, StateError
from qrng_dd.gateway import derive
from qrng_dd.gateway.openapi import DOCS_HTML, openapi_document
from qrng_dd.gateway.policy import (
    BYTES_PER_FLOAT,
    BYTES_PER_INTEGER,
    BYTES_PER_POINT,
    BYTES_PER_UUID,
    PROBLEM,
    Problem,
)
from qrng_dd.gateway.service import EntropyService
from qrng_dd.logs import fingerprint
from qrng_dd.wire.packet import MAX_PACKET_BYTES

log = structlog.get_logger("qrng_dd.gateway.http")

JSON: Final = "application/json"
TEXT: Final = "text/plain"
OCTET: Final = "application/octet-stream"
_INT: Final = re.compile(r"[+-]?[0-9]{1,30}")
MAX_COUNT: Final = 1000
MAX_UUIDS: Final = 100
MAX_ITERATIONS: Final = 10_000_000
DEFAULT_SELFTEST_BYTES: Final = 125_000
MIN_SELFTEST_BYTES: Final = 2_500

_PUSH_STATUS: Final[Mapping[str, int]] = {
    "oversize": 413,
    "bad_mac": 401,
    "wrong_dest": 403,
    "replay": 409,
}


class Reply:
    """One answer, independent of the front that sends it (Starlette or :class:`FastFront`).

    :meth:`response` gives the Starlette response; :meth:`raw_headers` gives exactly the header
    list Starlette's ``Response`` would build for it (same order, ``charset`` appended to
    ``text/*``), so both fronts answer byte for byte alike. Statuses are never 1xx/204/304.
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
        self.extra: list[tuple[bytes, bytes]] = []

    def response(self) -> Response:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.extra}
        headers.update(self.headers or {})
        return Response(self.body, self.status, headers=headers, media_type=self.media_type)

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
    """The ``content-type`` header Starlette sends for ``media_type`` (cached)."""
    header = _CONTENT_TYPES.get(media_type)
    if header is None:
        value = media_type
        if value.startswith("text/") and "charset=" not in value.lower():
            value += "; charset=utf-8"
        header = _CONTENT_TYPES[media_type] = (b"content-type", value.encode("latin-1"))
    return header


# json.dumps with these options builds a new encoder per call; one shared encoder is the same.
_JSON_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
)


def _json(content: Any) -> bytes:
    """JSON exactly as Starlette's ``JSONResponse`` renders it."""
    return _JSON_ENCODER.encode(content).encode("utf-8")


def _problem_reply(problem: Problem) -> Reply:
    return Reply(problem.body(), PROBLEM, problem.status, problem.headers)


def _bad(detail: str) -> Problem:
    return Problem(400, "Bad parameter", detail)


def int_param(
    params: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int:
    """A strictly parsed integer parameter within ``[low, high]``.

    Raises:
        Problem: 400 naming the parameter and its limits.
    """
    text = params.get(name)
    if text is None:
        if default is None:
            raise _bad(f"'{name}' is required ({low}..{high})")
        return default
    if not _INT.fullmatch(text):
        raise _bad(f"'{name}' must be an integer between {low} and {high}, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise _bad(f"'{name}' must be between {low} and {high}, got {text[:40]}")
    return value


Params = Mapping[str, str]
Handler = Callable[[Params, str], Reply]


class GatewayApp:
    """Builds the routes around one :class:`EntropyService`."""

    def __init__(self, service: EntropyService) -> None:
        self.service = service
        settings = service.settings
        self._fingerprints = {key: fingerprint(key) for key in settings.api_keys}
        self.policy = service.policy
        self._access_log = settings.access_log
        self._max_bytes = settings.max_request_bytes
        self._counters: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}
        self._docs = DOCS_HTML.encode("utf-8")

    # -- shared machinery -----------------------------------------------------------------

    def _record(self, name: str, status: int, started: float) -> None:
        counter = self._counters.get((name, status))
        if counter is None:
            counter = self._counters[(name, status)] = self.service.metrics.requests.labels(
                name, str(status)
            )
        counter.inc()
        latency = self._latency.get(name)
        if latency is None:
            latency = self._latency[name] = self.service.metrics.latency.labels(name)
        latency.observe(time.perf_counter() - started)

    def _short(self, err: EntropyExhaustedError) -> Reply:
        wait = self.service.retry_after()
        return _problem_reply(
            Problem(
                503,
                "Short of entropy",
                f"the pool holds {err.available} bytes, this request needs "
                f"{err.requested}; nothing was taken, retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        )

    def _finish(self, name: str, reply: Reply, started: float, key: str) -> None:
        status = reply.status
        self._record(name, status, started)
        if self._access_log or status >= 500:
            log.info(
                "request",
                endpoint=name,
                status=status,
                bytes=len(reply.body),
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                key=self._fingerprints.get(key, "-"),
            )

    def respond(
        self,
        name: str,
        handler: Handler,
        auth: bool,
        params: Params,
        authorization: str | None,
    ) -> Reply:
        """One request through auth, ``handler``, error rendering, metrics and access log.

        Both fronts call this: the Starlette routes (:meth:`endpoint`) and :class:`FastFront`.
        """
        started = time.perf_counter()
        key = ""
        try:
            if auth:
                key = self.policy.authenticate(authorization, params.get("api_key"))
            reply = handler(params, key)
        except Problem as problem:
            reply = _problem_reply(problem)
        except EntropyExhaustedError as err:
            reply = self._short(err)
        if key:
            # Every answer to a caller with a key: no-store and what is left of its budget.
            reply.extra = self.policy.raw_headers(key)
        self._finish(name, reply, started, key)
        return reply

    async def respond_push(self, content_length: str | None, body: AsyncIterable[bytes]) -> Reply:
        """``POST /push`` through error rendering, metrics and access log (no API key)."""
        started = time.perf_counter()
        try:
            reply = await self.push(content_length, body)
        except Problem as problem:
            reply = _problem_reply(problem)
        self._finish("push", reply, started, "")
        return reply

    def endpoint(
        self, name: str, handler: Handler, *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` as a Starlette endpoint, through :meth:`respond`."""

        async def run(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            return self.respond(name, handler, auth, request.query_params, authorization).response()

        return run

    async def push_endpoint(self, request: Request) -> Response:
        """``POST /push`` as a Starlette endpoint, through :meth:`respond_push`."""
        content_length = request.headers.get("content-length")
        return (await self.respond_push(content_length, request.stream())).response()

    # -- entropy routes -------------------------------------------------------------------

    def random(self, params: Params, key: str) -> Reply:
        n = int_param(params, "bytes", 32, 1, self._max_bytes)
        encoding = params.get("encoding", "hex")
        if encoding not in derive.ENCODINGS:
            raise _bad(f"'encoding' must be one of hex, base64, binary, got {encoding[:40]!r}")
        self.policy.admit(key, n)
        body = derive.encode(self.service.take(n), encoding)
        return Reply(body, OCTET if encoding == "binary" else TEXT)

    def integers(self, params: Params, key: str) -> Reply:
        count = int_param(params, "count", 10, 1, MAX_COUNT)
        low = int_param(params, "min", 0, derive.INT64_MIN, derive.INT64_MAX)
        high = int_param(params, "max", 100, derive.INT64_MIN, derive.INT64_MAX)
        if low > high:
            raise _bad(f"'min' ({low}) must not be greater than 'max' ({high})")
        self.policy.admit(key, BYTES_PER_INTEGER * count)
        return Reply(_json(self.service.integers(count, low, high)), JSON)

    def floats(self, params: Params, key: str) -> Reply:
        count = int_param(params, "count", 10, 1, MAX_COUNT)
        self.policy.admit(key, BYTES_PER_FLOAT * count)
        return Reply(_json(self.service.floats(count)), JSON)

    def uuid(self, params: Params, key: str) -> Reply:
        count = int_param(params, "count", 1, 1, MAX_UUIDS)
        self.policy.admit(key, BYTES_PER_UUID * count)
        values = self.service.uuids(count)
        if count == 1:
            return Reply(values[0].encode("utf-8"), TEXT)
        return Reply(_json(values), JSON)

    def monte_carlo(self, params: Params, key: str) -> Reply:
        iterations = int_param(params, "iterations", 100_000, 1, MAX_ITERATIONS)
        self.policy.admit(key, BYTES_PER_POINT * iterations)
        return Reply(_json(self.service.monte_carlo(iterations)), JSON)

    def randomness(self, params: Params, key: str) -> Reply:
        from qrng_dd.gateway.randomness import randomness_report

        cap = self.service.pool.capacity
        n = int_param(params, "bytes", min(DEFAULT_SELFTEST_BYTES, cap), MIN_SELFTEST_BYTES, cap)
        self.policy.admit(key, n)
        return Reply(_json(randomness_report(self.service.take(n))), JSON)

    # -- operations routes ----------------------------------------------------------------

    def status(self, params: Params, key: str) -> Reply:
        document = self.service.status()
        document["caller"] = {"key": self._fingerprints[key], "limits": self.policy.budget(key)}
        return Reply(_json(document), JSON)

    def health(self, params: Params, key: str) -> Reply:
        code, body = self.service.health()
        return Reply(_json(body), JSON, code)

    def metrics(self, params: Params, key: str) -> Reply:
        return Reply(generate_latest(self.service.metrics.registry), CONTENT_TYPE_LATEST)

    def openapi(self, params: Params, key: str) -> Reply:
        return Reply(_json(openapi_document(self.service.settings)), JSON)

    def docs(self, params: Params, key: str) -> Reply:
        return Reply(self._docs, "text/html")

    async def push(self, content_length: str | None, body: AsyncIterable[bytes]) -> Reply:
        try:
            if content_length is not None and (
                not content_length.isdigit() or int(content_length) > MAX_PACKET_BYTES
            ):
                raise PacketError("oversize", "Content-Length is over the packet limit")
            raw = await _read_limited(body, MAX_PACKET_BYTES)
        except PacketError as err:
            # Refused before ingest ever sees it, but counted all the same (DESIGN §3).
            self.service.refuse(err, "http")
            raise Problem(413, "Packet refused", f"oversize: {err.detail}") from None
        try:
            result = await self.service.ingest(raw, "http")
        except StateError:
            raise Problem(
                503,
                "State not durable",
                "the packet was accepted but its sequence number could not be written to the "
                "state directory, so its bytes were dropped; see the gateway's log",
            ) from None
        except PacketError as err:
            status = _PUSH_STATUS.get(err.reason, 400)
            raise Problem(status, "Packet refused", f"{err.reason}: {err.detail}") from None
        except PoolFullError:
            raise Problem(
                507,
                "Pool full",
                "the pool is full under the discard policy; the packet was not consumed, "
                "send it again later",
                {"Retry-After": str(self.service.retry_after())},
            ) from None
        # The JSON object built directly: ints, and a finite float whose repr is its JSON.
        fill = round(self.service.pool.fill_percent, 3)
        answer = b'{"accepted_bytes":%d,"dropped_bytes":%d,"buffer_fill_percent":%s}' % (
            result.accepted_bytes,
            result.dropped_bytes,
            repr(fill).encode("ascii"),
        )
        return Reply(answer, JSON)

    def hot_routes(self) -> dict[str, tuple[str, Handler]]:
        """The authenticated GET routes :class:`FastFront` serves itself: path -> name, handler."""
        return {
            "/api/random": ("random", self.random),
            "/api/integers": ("integers", self.integers),
            "/api/floats": ("floats", self.floats),
            "/api/uuid": ("uuid", self.uuid),
        }

    def routes(self) -> list[BaseRoute]:
        e = self.endpoint
        return [
            Route("/api/random", e("random", self.random), methods=["GET"]),
            Route("/api/integers", e("integers", self.integers), methods=["GET"]),
            Route("/api/floats", e("floats", self.floats), methods=["GET"]),
            Route("/api/uuid", e("uuid", self.uuid), methods=["GET"]),
            Route(
                "/api/test/monte-carlo",
                e("monte_carlo", self.monte_carlo),
                methods=["GET", "POST"],
            ),
            Route(
                "/api/test/randomness",
                e("randomness", self.randomness),
                methods=["GET", "POST"],
            ),
            Route("/api/status", e("status", self.status), methods=["GET"]),
            Route("/health", e("health", self.health, auth=False), methods=["GET"]),
            Route("/metrics", e("metrics", self.metrics, auth=False), methods=["GET"]),
            Route("/push", self.push_endpoint, methods=["POST"]),
            Route("/openapi.json", e("openapi", self.openapi, auth=False), methods=["GET"]),
            Route("/docs", e("docs", self.docs, auth=False), methods=["GET"]),
        ]


async def _read_limited(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` (never buffered whole).

    Raises:
        PacketError: ``oversize``.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PacketError("oversize", f"body is over {limit} bytes")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title = "Not found" if exc.status_code == 404 else "Method not allowed"
    detail = f"{request.method} {request.url.path}: {exc.detail}"
    return _problem_reply(Problem(exc.status_code, title, detail, exc.headers)).response()


def _crash_reply() -> Reply:
    return _problem_reply(Problem(500, "Internal error", "the gateway failed; see its log"))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path)
    return _crash_reply().response()


# -- the fast front ------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    """The first header called ``name`` (servers give names lowercased), as Starlette reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _query(query_string: bytes) -> dict[str, str]:
    """Starlette's ``query_params`` as a dict: blank values kept, the last repeated name wins.

    Without ``%`` or ``+`` nothing is unquoted, and splitting is all ``parse_qsl`` does.
    """
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    params: dict[str, str] = {}
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            params[name] = value
    return params


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body's chunks, exactly as Starlette's ``Request.stream`` yields them."""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect


async def _send(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status,
                "headers": reply.raw_headers()})  # fmt: skip
    await send({"type": "http.response.body", "body": reply.body})


class FastFront:
    """The gateway's ASGI application: the hot routes served directly, the rest by Starlette.

    ``GET /api/random|integers|floats|uuid`` and ``POST /push`` skip Starlette's middleware,
    routing and request/response objects (DESIGN §11): a dict lookup on the path, the query
    string parsed once, one start and one body message. They run through the same
    :meth:`GatewayApp.respond` / :meth:`GatewayApp.respond_push` as the Starlette routes, so
    auth, limits, errors, metrics and the access log are the same code. Every other path,
    method or scope (``/api/status``, ``/health``, ``/metrics``, ``/docs``, ``/mcp``, 404, 405,
    HEAD, lifespan) goes to the Starlette app, which still has every route.
    """

    def __init__(self, app: Starlette, gateway: GatewayApp) -> None:
        self.app = app
        self.gateway = gateway
        self.state = app.state
        self._get = gateway.hot_routes()

    @property
    def routes(self) -> list[BaseRoute]:
        """Every route of the app (the hot ones are Starlette routes too)."""
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method = scope["method"]
            if method == "GET":
                route = self._get.get(scope["path"])
                if route is not None:
                    await self._serve(scope, send, *route)
                    return
            elif method == "POST" and scope["path"] == "/push":
                await self._push(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, send: Send, name: str, handler: Handler) -> None:
        query = scope["query_string"]
        params = _query(query) if query else {}
        try:
            reply = self.gateway.respond(
                name, handler, True, params, _header(scope, b"authorization")
            )
        except Exception:
            await self._crash(scope, send)
            raise
        await _send(send, reply)

    async def _push(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            reply = await self.gateway.respond_push(
                _header(scope, b"content-length"), _body(receive)
            )
        except Exception:
            await self._crash(scope, send)
            raise
        await _send(send, reply)

    async def _crash(self, scope: Scope, send: Send) -> None:
        # What Starlette's ServerErrorMiddleware does with _server_error: log, 500, re-raise.
        log.exception("unhandled_error", path=scope["path"])
        await _send(send, _crash_reply())


def create_app(
    service: EntropyService,
    *,
    extra_routes: list[BaseRoute] | None = None,
    lifespan: Any = None,
) -> FastFront:
    """The gateway's ASGI application around ``service``: :class:`FastFront` over Starlette."""
    gateway = GatewayApp(service)
    app = Starlette(
        routes=gateway.routes() + list(extra_routes or []),
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return FastFront(app, gateway)
