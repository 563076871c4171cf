"""The gateway's HTTP face: thin Starlette routes over :class:`EntropyService` (DESIGN §5).

Every route goes through :func:`_endpoint`, which does the shared work once: authentication
(constant-time, key never logged), rate limits, turning errors into
``application/problem+json``, the request metrics and the access log. No Starlette middleware
is used: each middleware layer costs a share of a small request's time (DESIGN §11).

Parameters are parsed strictly: an integer is optional sign and digits, nothing else, and its
range is checked before any entropy is touched, so a bad request never drains the pool.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from qrng_dd import derive
from qrng_dd.errors import EntropyExhaustedError, PacketError, PoolFullError
from qrng_dd.gateway.openapi import DOCS_HTML, openapi_document
from qrng_dd.gateway.service import EntropyService
from qrng_dd.logs import fingerprint
from qrng_dd.packet import MAX_PACKET_BYTES

log = structlog.get_logger("qrng_dd.gateway.http")

PROBLEM: Final = "application/problem+json"
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


class Problem(Exception):  # noqa: N818 - it is an HTTP problem document, not an error type
    """An RFC 9457 problem: raised inside a route, rendered by :func:`_endpoint`."""

    def __init__(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self) -> Response:
        slug = self.title.lower().replace(" ", "-")
        body = {
            "type": f"https://qrng-dd.invalid/problems/{slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        return Response(json.dumps(body), self.status, headers=self.headers, media_type=PROBLEM)


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


Handler = Callable[[Request, str], Awaitable[Response]]


class GatewayApp:
    """Builds the routes around one :class:`EntropyService`."""

    def __init__(self, service: EntropyService) -> None:
        self.service = service
        settings = service.settings
        self._keys = [key.encode() for key in settings.api_keys]
        self._fingerprints = {key: fingerprint(key) for key in settings.api_keys}
        self.limiter = service.limiter
        self._access_log = settings.access_log
        self._max_bytes = settings.max_request_bytes
        self._counters: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    # -- shared machinery -----------------------------------------------------------------

    def authenticate(self, request: Request) -> str:
        """The API key presented, if it is one of ours.

        Every configured key is compared, in constant time, whatever matched first: the
        time taken says nothing about which key or how much of it was right.

        Raises:
            Problem: 401.
        """
        presented = request.query_params.get("api_key")
        if presented is None:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer":
                presented = token.strip()
        if not presented:
            raise Problem(
                401,
                "Unauthorized",
                "an API key is required: ?api_key=KEY or Authorization: Bearer KEY",
                {"WWW-Authenticate": "Bearer"},
            )
        candidate = presented.encode()
        found: bytes | None = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key):
                found = key
        if found is None:
            raise Problem(401, "Unauthorized", "unknown API key", {"WWW-Authenticate": "Bearer"})
        return found.decode()

    def limit(self, key: str, nbytes: int) -> None:
        """Charge the request to the key's buckets. Raises: Problem 429."""
        wait = self.limiter.check(key, nbytes)
        if wait:
            raise Problem(
                429,
                "Too many requests",
                f"rate limit for this key exceeded; retry in {wait} s",
                {"Retry-After": str(wait)},
            )

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

    def endpoint(
        self, name: str, handler: Handler, *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap ``handler`` with auth, error rendering, metrics and the access log."""

        async def run(request: Request) -> Response:
            started = time.perf_counter()
            key = ""
            try:
                if auth:
                    key = self.authenticate(request)
                response = await handler(request, key)
            except Problem as problem:
                response = problem.response()
            except EntropyExhaustedError as err:
                wait = self.service.retry_after()
                response = Problem(
                    503,
                    "Short of entropy",
                    f"the pool holds {err.available} bytes, this request needs "
                    f"{err.requested}; nothing was taken, retry in {wait} s",
                    {"Retry-After": str(wait)},
                ).response()
            status = response.status_code
            self._record(name, status, started)
            if self._access_log or status >= 500:
                log.info(
                    "request",
                    endpoint=name,
                    status=status,
                    bytes=len(response.body) if hasattr(response, "body") else None,
                    latency_ms=round((time.perf_counter() - started) * 1000, 3),
                    key=self._fingerprints.get(key, "-"),
                )
            return response

        return run

    # -- entropy routes -------------------------------------------------------------------

    async def random(self, request: Request, key: str) -> Response:
        params = request.query_params
        n = int_param(params, "bytes", 32, 1, self._max_bytes)
        encoding = params.get("encoding", "hex")
        if encoding not in derive.ENCODINGS:
            raise _bad(f"'encoding' must be one of hex, base64, binary, got {encoding[:40]!r}")
        self.limit(key, n)
        body = derive.encode(self.service.take(n), encoding)
        media = "application/octet-stream" if encoding == "binary" else "text/plain"
        return Response(body, media_type=media)

    async def integers(self, request: Request, key: str) -> Response:
        params = request.query_params
        count = int_param(params, "count", 10, 1, MAX_COUNT)
        low = int_param(params, "min", 0, derive.INT64_MIN, derive.INT64_MAX)
        high = int_param(params, "max", 100, derive.INT64_MIN, derive.INT64_MAX)
        if low > high:
            raise _bad(f"'min' ({low}) must not be greater than 'max' ({high})")
        self.limit(key, 8 * count)
        return JSONResponse(self.service.integers(count, low, high))

    async def floats(self, request: Request, key: str) -> Response:
        count = int_param(request.query_params, "count", 10, 1, MAX_COUNT)
        self.limit(key, 8 * count)
        return JSONResponse(self.service.floats(count))

    async def uuid(self, request: Request, key: str) -> Response:
        count = int_param(request.query_params, "count", 1, 1, MAX_UUIDS)
        self.limit(key, 16 * count)
        values = self.service.uuids(count)
        if count == 1:
            return Response(values[0], media_type="text/plain")
        return JSONResponse(values)

    async def monte_carlo(self, request: Request, key: str) -> Response:
        iterations = int_param(request.query_params, "iterations", 100_000, 1, MAX_ITERATIONS)
        self.limit(key, 16 * iterations)
        return JSONResponse(self.service.monte_carlo(iterations))

    async def randomness(self, request: Request, key: str) -> Response:
        from qrng_dd.randomness import randomness_report

        cap = self.service.pool.capacity
        n = int_param(
            request.query_params, "bytes", min(DEFAULT_SELFTEST_BYTES, cap), MIN_SELFTEST_BYTES,
            cap,
        )  # fmt: skip
        self.limit(key, n)
        return JSONResponse(randomness_report(self.service.take(n)))

    # -- operations routes ----------------------------------------------------------------

    async def status(self, request: Request, key: str) -> Response:
        return JSONResponse(self.service.status())

    async def health(self, request: Request, key: str) -> Response:
        code, body = self.service.health()
        return JSONResponse(body, status_code=code)

    async def metrics(self, request: Request, key: str) -> Response:
        return Response(
            generate_latest(self.service.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    async def openapi(self, request: Request, key: str) -> Response:
        return JSONResponse(openapi_document(self.service.settings))

    async def docs(self, request: Request, key: str) -> Response:
        return HTMLResponse(DOCS_HTML)

    async def push(self, request: Request, key: str) -> Response:
        declared = request.headers.get("content-length")
        try:
            if declared is not None and (
                not declared.isdigit() or int(declared) > MAX_PACKET_BYTES
            ):
                raise PacketError("oversize", "Content-Length is over the packet limit")
            raw = await _read_limited(request, MAX_PACKET_BYTES)
        except PacketError as err:
            # Refused before ingest ever sees it, but counted all the same (DESIGN §3).
            self.service.refuse(err, "http")
            raise Problem(413, "Packet refused", f"oversize: {err.detail}") from None
        try:
            result = self.service.ingest(raw, "http")
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
        return JSONResponse(
            {
                "accepted_bytes": result.accepted_bytes,
                "dropped_bytes": result.dropped_bytes,
                "buffer_fill_percent": round(self.service.pool.fill_percent, 3),
            }
        )

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
            Route("/push", e("push", self.push, auth=False), methods=["POST"]),
            Route("/openapi.json", e("openapi", self.openapi, auth=False), methods=["GET"]),
            Route("/docs", e("docs", self.docs, auth=False), methods=["GET"]),
        ]


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` (never buffered whole).

    Raises:
        PacketError: ``oversize``.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PacketError("oversize", f"body is over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return Problem(exc.status_code, "Not found" if exc.status_code == 404 else "Method not allowed",
                   f"{request.method} {request.url.path}: {exc.detail}",
                   exc.headers).response()  # fmt: skip


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path)
    return Problem(500, "Internal error", "the gateway failed; see its log").response()


def create_app(
    service: EntropyService,
    *,
    extra_routes: list[BaseRoute] | None = None,
    lifespan: Any = None,
) -> Starlette:
    """The gateway's ASGI application around ``service``."""
    gateway = GatewayApp(service)
    app = Starlette(
        routes=gateway.routes() + list(extra_routes or []),
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
