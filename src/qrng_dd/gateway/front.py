"""The gateway's one ASGI application, made from the route table.

Every request goes the same way: a dict lookup on the path (404, 405 with ``Allow``), then
for a route of the table: authentication (constant-time, key never logged), the parameters
parsed and range-checked, the byte cost charged by the service, the handler, errors turned
into ``application/problem+json``, the request metrics and the access log; one start and one
body message. No framework sits in between: each layer would cost a share of a small
request's time (DESIGN §11). Exact-path mounts (the gateway's ``/mcp``) get the raw scope.
The ASGI lifespan protocol runs the context manager the server was built with.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from time import perf_counter
from typing import Final
from urllib.parse import parse_qsl

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from qrng_dd.errors import EntropyExhaustedError
from qrng_dd.gateway.api import Args, Call, Reply, Route
from qrng_dd.gateway.policy import bearer_token
from qrng_dd.gateway.problem import Problem, internal_error
from qrng_dd.gateway.routes import ROUTES
from qrng_dd.gateway.service import EntropyService
from qrng_dd.logs import AccessLog, fingerprint

log = structlog.get_logger("qrng_dd.gateway.http")

Lifespan = Callable[[], AbstractAsyncContextManager[None]]
_EMPTY: Final[Mapping[str, str]] = {}
#: Parsed query strings kept per route: clients repeat a few queries (``?bytes=32``), and
#: splitting, parsing and range-checking one again costs more than the rest of the front's
#: own work. Only valid queries without ``api_key`` and at most ``_MEMO_QUERY`` bytes long
#: are kept, at most ``_MEMO_SIZE`` per route (then the memo starts over).
_MEMO_SIZE: Final = 256
_MEMO_QUERY: Final = 128


class Disconnected(Exception):  # noqa: N818 - a client going away is not an error of ours
    """The client went away before its request body was read."""


class Front:
    """The gateway's ASGI app over ``service``: ``routes`` (bound to its settings), mounts."""

    def __init__(
        self,
        service: EntropyService,
        routes: Sequence[Route] = ROUTES,
        *,
        mounts: Mapping[str, ASGIApp] | None = None,
        lifespan: Lifespan | None = None,
    ) -> None:
        settings = service.settings
        self.service = service
        self.policy = service.policy
        self.routes = tuple(route.bind(settings) for route in routes)
        self.mounts = dict(mounts or {})
        self._lifespan = lifespan
        self._by_path = {route.path: route for route in self.routes}
        if len(self._by_path) != len(self.routes) or self._by_path.keys() & self.mounts.keys():
            raise ValueError("two routes on one path")
        self._access_log = settings.access_log
        #: JSON lines at level info or below take the fast way; console lines are for people.
        self._fast_log: AccessLog | None = None
        if settings.log_format == "json" and settings.log_level.lower() in ("debug", "info"):
            self._fast_log = AccessLog()
        self._fingerprints = {key: fingerprint(key) for key in settings.api_keys}
        self._stats = service.metrics.requests
        #: Per route: query string -> its arguments and their cost (see _MEMO_SIZE).
        self._memo: dict[str, dict[bytes, tuple[Args, int | None]]] = {
            route.name: {} for route in self.routes
        }

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._run_lifespan(receive, send)
        else:  # a websocket: none is served here
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        route = self._by_path.get(path)
        if route is None:
            mount = self.mounts.get(path)
            if mount is not None:
                await mount(scope, receive, send)
                return
            # "/anu" is served by the route on "/anu/" (where servers would redirect).
            route = self._by_path.get(path + "/") if path[-1:] != "/" else None
        if route is None:
            method = scope["method"]
            await _send(send, Reply.problem(_not_found(method, path)), method)
            return
        method = scope["method"]
        if method not in route.methods and not (method == "HEAD" and "GET" in route.methods):
            await _send(send, Reply.problem(_not_allowed(method, path, route.methods)), method)
            return
        try:
            if route.handler is not None:
                reply = self.respond(route, scope)
            else:
                reply = await self._respond_body(route, scope, receive)
        except Disconnected:
            return
        except Exception:
            log.exception("unhandled_error", path=path)
            reply = Reply.problem(internal_error())
            self._stats.record(route.name, reply.status, 0.0)
        await _send(send, reply, method)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        started = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self.flush_log)  # last out: the lines of the shutdown too
                if self._lifespan is not None:
                    await stack.enter_async_context(self._lifespan())
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException:
            phase = "shutdown" if started else "startup"
            await send({"type": f"lifespan.{phase}.failed", "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    def flush_log(self) -> None:
        """Write the access-log lines still waiting (the fast log batches them)."""
        if self._fast_log is not None:
            self._fast_log.flush()

    # -- one request ----------------------------------------------------------------------------

    def respond(self, route: Route, scope: Scope) -> Reply:
        """Auth, parameters, charge, handler, problems, metrics and access log of one request."""
        assert route.handler is not None
        started = perf_counter()
        key = ""
        try:
            query = scope["query_string"]
            memo = self._memo[route.name]
            parsed = memo.get(query)
            params = _EMPTY if parsed is not None or not query else _query(query)
            if route.auth:
                # The policy's order: bearer token, x-api-key (ANU clients), ?api_key=. The
                # second header is looked for only without a token: one scan on the common path.
                presented = bearer_token(_header(scope, b"authorization"))
                if not presented:
                    presented = _header(scope, b"x-api-key") or params.get("api_key")
                key = self.policy.verify(presented)
            if parsed is None:
                args = route.parse(params)
                parsed = (args, route.cost_of(args))
                if len(query) <= _MEMO_QUERY and "api_key" not in params:
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    memo[query] = parsed
            args, cost = parsed
            if cost is not None:
                self.service.charge(key, cost)
            reply = route.handler(Call(self.service, args, key, self.routes))
        except Problem as problem:
            reply = Reply.problem(problem)
        except EntropyExhaustedError as err:
            reply = self._short(err)
        if key:
            # Every answer to a caller with a key: no-store and what is left of its budget.
            reply.extra = self.policy.raw_headers(key)
        self._finish(route.name, reply, started, key)
        return reply

    async def _respond_body(self, route: Route, scope: Scope, receive: Receive) -> Reply:
        assert route.body_handler is not None
        started = perf_counter()
        call = Call(self.service, {}, "", self.routes, _header(scope, b"content-length"),
                    _Body(receive))  # fmt: skip
        try:
            reply = await route.body_handler(call)
        except Problem as problem:
            reply = Reply.problem(problem)
        self._finish(route.name, reply, started, "")
        return reply

    def _short(self, err: EntropyExhaustedError) -> Reply:
        wait = self.service.retry_after()
        detail = (
            f"the pool holds {err.available} bytes, this request needs {err.requested}; "
            f"nothing was taken, retry in {wait} s"
        )
        return Reply.problem(Problem(503, "Short of entropy", detail, {"Retry-After": str(wait)}))

    def _finish(self, name: str, reply: Reply, started: float, key: str) -> None:
        status = reply.status
        self._stats.record(name, status, perf_counter() - started)
        if not (self._access_log or status >= 500):
            return
        # A 5xx is logged with the access log off too; mostly an honest 503 from a dry pool,
        # one per request while clients retry: through structlog that cost 3x the request.
        if self._fast_log is not None:
            key_name = self._fingerprints.get(key, "-")
            self._fast_log.write(name, status, len(reply.body), perf_counter() - started, key_name)
        else:
            log.info(
                "request",
                endpoint=name,
                status=status,
                bytes=len(reply.body),
                latency_ms=round((perf_counter() - started) * 1000, 3),
                key=self._fingerprints.get(key, "-"),
            )


def _not_found(method: str, path: str) -> Problem:
    return Problem(404, "Not found", f"{method} {path[:200]}: Not Found")


def _not_allowed(method: str, path: str, methods: Sequence[str]) -> Problem:
    allowed = ", ".join(methods)
    detail = f"{method} {path}: Method Not Allowed (allowed: {allowed})"
    return Problem(405, "Method not allowed", detail, {"Allow": allowed})


def _header(scope: Scope, name: bytes) -> str | None:
    """The first header called ``name`` (servers give names lowercased)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _query(query_string: bytes) -> dict[str, str]:
    """The query parameters: blank values kept, the last repeated name wins.

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


class _Body:
    """The request body's chunks, read as the handler iterates. Raises: Disconnected.

    A class, not an async generator: the event loop tracks every async generator in a weak
    set until it is finalised, a few microseconds per request that a 1 KiB push feels.
    """

    __slots__ = ("_done", "_receive")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._done = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            message = await self._receive()
            if message["type"] == "http.request":
                self._done = not message.get("more_body", False)
                chunk: bytes = message.get("body", b"")
                if chunk:
                    return chunk
            elif message["type"] == "http.disconnect":
                raise Disconnected
        raise StopAsyncIteration


async def _send(send: Send, reply: Reply, method: str = "GET") -> None:
    await send({"type": "http.response.start", "status": reply.status,
                "headers": reply.raw_headers()})  # fmt: skip
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else reply.body})
