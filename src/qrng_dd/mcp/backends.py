"""Where the MCP tools get entropy: the gateway in process, or its REST API over HTTP."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import httpx

from qrng_dd import __version__
from qrng_dd.errors import EntropyExhaustedError, QrngError
from qrng_dd.gateway import report
from qrng_dd.gateway.problem import Problem
from qrng_dd.gateway.routes import BY_NAME

if TYPE_CHECKING:
    from qrng_dd.gateway.service import EntropyService

log = logging.getLogger(__name__)


T = TypeVar("T")

# One MCP process serves one user or a few agents; 16 connections to the gateway are plenty
# and keep a runaway model from opening thousands.
_LIMITS: Final = httpx.Limits(max_connections=16, max_keepalive_connections=8)

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

    async def status(self) -> Mapping[str, Any]: ...


class ServiceBackend:
    """The gateway's in-process :class:`EntropyService`: same pool, no network hop.

    Bound to a caller (the API key the ``/mcp`` guard authenticated), every draw is charged
    to that key's byte budget through the gateway's one :class:`~qrng_dd.gateway.policy.Policy`,
    exactly as the REST route would charge it; the guard already charged the request.
    """

    def __init__(self, service: EntropyService, caller: str | None = None) -> None:
        self.service = service
        self.caller = caller
        # What the REST route would accept: QRNG_MAX_REQUEST_BYTES, within the pool's capacity.
        self._max_bytes = BY_NAME["random"].bind(service.settings).param("bytes").maximum

    def bind(self, caller: str | None) -> ServiceBackend:
        return self if caller == self.caller else ServiceBackend(self.service, caller)

    def _draw(self, route: str, args: dict[str, int], fn: Callable[[], T]) -> T:
        """``fn`` charged to the caller at the REST route's byte cost (the guard already
        charged the request), then run: the service is synchronous and runs on this event
        loop, so each call is atomic (P3)."""
        cost = BY_NAME[route].cost
        if self.caller is not None and cost is not None:
            try:
                self.service.charge(self.caller, cost(args), request=False)
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
            "integers", {"count": count}, lambda: self.service.integers(count, low, high)
        )

    async def floats(self, count: int) -> list[float]:
        return self._draw("floats", {"count": count}, lambda: self.service.floats(count))

    async def uuids(self, count: int) -> list[str]:
        return self._draw("uuid", {"count": count}, lambda: self.service.uuids(count))

    async def status(self) -> Mapping[str, Any]:
        return report.status(self.service)


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
