"""Where the MCP tools get entropy: the gateway in process, or its REST API over HTTP."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

from qrng_dd.client import AsyncClient, ClientError
from qrng_dd.client.protocol import FailureKind
from qrng_dd.errors import EntropyExhaustedError, QrngError
from qrng_dd.gateway import report, shaped
from qrng_dd.gateway.api import Route
from qrng_dd.gateway.problem import Problem
from qrng_dd.gateway.routes import BY_NAME

if TYPE_CHECKING:
    from qrng_dd.gateway.service import EntropyService

log = logging.getLogger(__name__)


T = TypeVar("T")


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

    async def status(self) -> Mapping[str, Any]: ...

    async def shape(self, route: str, args: Mapping[str, Any]) -> Any:
        """The JSON answer of one of the shape routes (:mod:`qrng_dd.gateway.shaped`)."""
        ...


class ServiceBackend:
    """The gateway's in-process :class:`EntropyService`: same pool, no network hop.

    Bound to a caller (the API key the ``/mcp`` guard authenticated), every draw is charged
    to that key's byte budget through the gateway's one :class:`~qrng_dd.gateway.policy.Policy`,
    exactly as the REST route would charge it; the guard already charged the request.
    """

    def __init__(
        self,
        service: EntropyService,
        caller: str | None = None,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.service = service
        self.caller = caller
        #: The route table bound to this gateway's settings: the REST routes' limits.
        self._routes = routes or {r.name: r.bind(service.settings) for r in BY_NAME.values()}
        # What the REST route would accept: QRNG_MAX_REQUEST_BYTES, within the pool's capacity.
        self._max_bytes = self._routes["random"].param("bytes").maximum

    def bind(self, caller: str | None) -> ServiceBackend:
        if caller == self.caller:
            return self
        return ServiceBackend(self.service, caller, self._routes)

    def _draw(self, route: str, args: Mapping[str, Any], fn: Callable[[], T]) -> T:
        """``fn`` charged to the caller at the REST route's byte cost (the guard already
        charged the request), then run: the service is synchronous and runs on this event
        loop, so each call is atomic (P3). A cost the pool can never hold is refused, as
        the REST route refuses it."""
        try:
            cost = self._routes[route].cost_of(args)
        except Problem as problem:
            raise BackendError("refused", problem.detail) from None
        if self.caller is not None and cost is not None:
            try:
                self.service.charge(self.caller, cost, request=False)
            except Problem as problem:
                raise BackendError("rate_limited", problem.detail, problem.retry_after) from None
        try:
            return fn()
        except EntropyExhaustedError as err:
            raise BackendError(
                "short",
                f"the pool holds {err.available} bytes, this request needs {err.requested}; "
                "nothing was taken",
                self.service.retry_after(),
            ) from None

    async def random_bytes(self, count: int) -> bytes:
        if count > self._max_bytes:
            msg = f"this gateway serves at most {self._max_bytes} bytes a request"
            raise BackendError("refused", msg)
        return self._draw("random", {"bytes": count}, lambda: self.service.take(count))

    async def integers(self, count: int, low: int, high: int) -> list[int]:
        return self._draw(
            "integers",
            {"count": count, "min": low, "max": high},
            lambda: self.service.integers(count, low, high),
        )

    async def floats(self, count: int) -> list[float]:
        return self._draw("floats", {"count": count}, lambda: self.service.floats(count))

    async def uuids(self, count: int) -> list[str]:
        return self._draw("uuid", {"count": count}, lambda: self.service.uuids(count))

    async def status(self) -> Mapping[str, Any]:
        return report.status(self.service)

    async def shape(self, route: str, args: Mapping[str, Any]) -> Any:
        # Parsed and checked exactly as the REST route parses its query string.
        try:
            parsed = self._routes[route].parse({name: str(value) for name, value in args.items()})
        except Problem as problem:
            raise BackendError("refused", problem.detail) from None
        values = shaped.VALUES[route]
        return self._draw(route, parsed, lambda: values(self.service, parsed))


class HttpBackend:
    """A gateway's REST API through the SDK's :class:`~qrng_dd.client.AsyncClient`, which
    checks every answer against what its route promises. Use as ``async with``.

    It never waits on ``Retry-After`` (``max_wait=0``): an agent is told at once, with the
    wait, and decides itself.
    """

    def __init__(
        self,
        gateway_url: str,
        api_key: str,
        timeout: float = 10.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self._client = AsyncClient(
            self.gateway_url, api_key, timeout=timeout, max_wait=0, transport=transport
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

    async def random_bytes(self, count: int) -> bytes:
        return await _answer(self._client.random_bytes(count))

    async def integers(self, count: int, low: int, high: int) -> list[int]:
        return await _answer(self._client.integers(count, low, high))

    async def floats(self, count: int) -> list[float]:
        return await _answer(self._client.floats(count))

    async def uuids(self, count: int) -> list[str]:
        return await _answer(self._client.uuids(count))

    async def status(self) -> dict[str, Any]:
        return await _answer(self._client.status())

    async def shape(self, route: str, args: Mapping[str, Any]) -> Any:
        return await _answer(self._client.fetch_json(BY_NAME[route].path, args))


async def _answer(call: Awaitable[T]) -> T:
    """``call``'s result; a :class:`ClientError` as the :class:`BackendError` of its kind."""
    try:
        return await call
    except ClientError as err:
        wait = None if err.retry_after is None else math.ceil(err.retry_after)
        raise BackendError(err.kind, err.detail, wait) from None
