"""What the sync and the async client share: errors, limits, splitting, decoding. No I/O.

A client call is planned here as a list of requests, each within the gateway's limits (read
once from its ``/openapi.json``, so a gateway with a larger ``QRNG_MAX_REQUEST_BYTES`` is used
in fewer requests), and each answer is checked and decoded here: a body that is not what the
route promises is an error, never a value. The two clients only send the requests and wait
on ``Retry-After``; they share every rule through this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

import httpx

from qrng_dd.errors import QrngError

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")

#: Environment variables a client reads when it is given no URL or key.
URL_VARIABLE: Final = "QRNG_GATEWAY_URL"
KEY_VARIABLE: Final = "QRNG_GATEWAY_API_KEY"
DEFAULT_URL: Final = "http://127.0.0.1:7764"

FailureKind = Literal["short", "rate_limited", "unauthorized", "unreachable", "refused", "gateway"]


class ClientError(QrngError):
    """A gateway could not give what was asked. ``kind`` says why; ``str()`` the details.

    Never caught inside the client to fall back on another source: a program that asked for
    quantum randomness either gets it or gets this.
    """

    kind: FailureKind = "gateway"

    def __init__(self, detail: str, retry_after: float | None = None, status: int = 0) -> None:
        super().__init__(detail)
        self.detail = detail
        #: Seconds the gateway asked to wait (429 and 503), if it said.
        self.retry_after = retry_after
        #: The HTTP status, 0 when there was no answer.
        self.status = status


class AuthenticationError(ClientError):
    """401: the API key is missing, wrong or revoked."""

    kind = "unauthorized"


class RequestRefusedError(ClientError):
    """400: a parameter is out of range; the detail names it. Retrying will not help."""

    kind = "refused"


class RateLimitedError(ClientError):
    """429 past the client's wait budget: this key's request or byte rate is used up."""

    kind = "rate_limited"


class EntropyUnavailableError(ClientError):
    """503 past the client's wait budget: the gateway's pool is short of bytes."""

    kind = "short"


class GatewayUnreachableError(ClientError):
    """No answer: connection refused, timeout, TLS failure."""

    kind = "unreachable"


class GatewayError(ClientError):
    """Any other answer, or one that is not what the route promises."""


_BY_STATUS: Final[Mapping[int, type[ClientError]]] = {
    400: RequestRefusedError,
    401: AuthenticationError,
    429: RateLimitedError,
    503: EntropyUnavailableError,
}
#: Statuses worth waiting on: the same request succeeds later.
RETRYABLE: Final = frozenset({429, 503})
#: The wait when a 429 or 503 carries no usable ``Retry-After``.
DEFAULT_RETRY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The most a gateway serves in one request, per route (its ``/openapi.json`` says)."""

    random_bytes: int = 1024
    integers: int = 1000
    floats: int = 1000
    uuids: int = 100

    @classmethod
    def from_openapi(cls, document: Any) -> Limits:
        """The limits a gateway's OpenAPI document states; the defaults where it is silent."""
        found = {
            name: _maximum(document, path, param)
            for name, path, param in (
                ("random_bytes", "/api/random", "bytes"),
                ("integers", "/api/integers", "count"),
                ("floats", "/api/floats", "count"),
                ("uuids", "/api/uuid", "count"),
            )
        }
        return cls(**{name: value for name, value in found.items() if value is not None})


def _maximum(document: Any, path: str, param: str) -> int | None:
    try:
        parameters = document["paths"][path]["get"]["parameters"]
        (schema,) = (p["schema"] for p in parameters if p.get("name") == param)
        maximum = schema["maximum"]
    except (KeyError, TypeError, ValueError):
        return None
    return maximum if type(maximum) is int and maximum >= 1 else None


def split(total: int, most: int) -> list[int]:
    """``total`` as request sizes of at most ``most``: ``split(10, 4) == [4, 4, 2]``."""
    if total < 1:
        msg = f"asked for {total}; ask for at least 1"
        raise RequestRefusedError(msg)
    whole, rest = divmod(total, most)
    return [most] * whole + ([rest] if rest else [])


@dataclass(frozen=True, slots=True)
class Plan(Generic[P, R]):
    """The requests one call makes (parameters and how many values each brings), how each
    answer is checked and decoded, and how the parts join into the result."""

    path: str
    parts: Sequence[tuple[Mapping[str, str | int], int]]
    decode: Callable[[httpx.Response, int], P]
    join: Callable[[list[P]], R]


def retry_delay(response: httpx.Response) -> float | None:
    """How long to wait before asking again, or ``None`` if waiting will not help."""
    if response.status_code not in RETRYABLE:
        return None
    return _retry_after(response) or DEFAULT_RETRY_S


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the gateway sends whole seconds; a date is ignored)."""
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def failure(response: httpx.Response) -> ClientError:
    """The error for a non-success answer, with the problem document's detail."""
    detail = _problem_detail(response)
    error = _BY_STATUS.get(response.status_code, GatewayError)
    if error is GatewayError:
        detail = f"HTTP {response.status_code}: {detail}"
    return error(detail, _retry_after(response), response.status_code)


def _problem_detail(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        detail = problem.get("detail") or problem.get("title")
        if isinstance(detail, str) and detail:
            return detail
    return response.reason_phrase or f"HTTP {response.status_code}"


def unreachable(url: str, err: httpx.HTTPError, timeout: float) -> GatewayUnreachableError:
    """The error for a request that got no answer."""
    if isinstance(err, httpx.TimeoutException):
        return GatewayUnreachableError(f"the gateway at {url} did not answer within {timeout:g} s")
    return GatewayUnreachableError(f"cannot reach {url}: {str(err) or type(err).__name__}")


def malformed(path: str, why: str) -> GatewayError:
    return GatewayError(f"{path} answered with {why}")


def _json_list(response: httpx.Response, path: str, count: int) -> list[Any]:
    try:
        values = response.json()
    except ValueError:
        raise malformed(path, "a body that is not JSON") from None
    if not isinstance(values, list) or len(values) != count:
        raise malformed(path, f"something other than a list of {count}")
    return values


def _concat(parts: list[list[T]]) -> list[T]:
    return [value for part in parts for value in part]


def _checked(path: str, valid: Callable[[Any], bool]) -> Callable[[httpx.Response, int], list[Any]]:
    """A decoder of a JSON list of ``count`` values, each of which must be ``valid``."""

    def decode(response: httpx.Response, count: int) -> list[Any]:
        values = _json_list(response, path, count)
        if not all(map(valid, values)):
            raise malformed(path, "a value outside what the route promises")
        return values

    return decode


# --- the plans, one per route --------------------------------------------------------------


def random_bytes(limits: Limits, count: int) -> Plan[bytes, bytes]:
    """``/api/random`` as raw bytes, split at the gateway's ``QRNG_MAX_REQUEST_BYTES``."""

    def decode(response: httpx.Response, count: int) -> bytes:
        if len(response.content) != count:
            raise malformed("/api/random", f"{len(response.content)} bytes instead of {count}")
        return response.content

    sizes = split(count, limits.random_bytes)
    parts: list[tuple[Mapping[str, str | int], int]] = [
        ({"bytes": n, "encoding": "binary"}, n) for n in sizes
    ]
    return Plan("/api/random", parts, decode, b"".join)


def integers(limits: Limits, count: int, low: int, high: int) -> Plan[list[int], list[int]]:
    """``/api/integers``: uniform in ``[low, high]``, both inclusive."""
    parts = [({"count": n, "min": low, "max": high}, n) for n in split(count, limits.integers)]
    valid = _checked("/api/integers", lambda v: type(v) is int and low <= v <= high)
    return Plan("/api/integers", parts, valid, _concat)


def floats(limits: Limits, count: int) -> Plan[list[float], list[float]]:
    """``/api/floats``: uniform in ``[0, 1)``, 53 random bits each."""
    parts = [({"count": n}, n) for n in split(count, limits.floats)]
    valid = _checked("/api/floats", lambda v: type(v) is float and 0 <= v < 1)
    return Plan("/api/floats", parts, valid, _concat)


_UUID4: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def uuids(limits: Limits, count: int) -> Plan[list[str], list[str]]:
    """``/api/uuid``: RFC 9562 version-4 UUIDs as strings (one is sent as text, several as
    a JSON list)."""
    valid = _checked("/api/uuid", lambda v: isinstance(v, str) and bool(_UUID4.fullmatch(v)))

    def decode(response: httpx.Response, count: int) -> list[str]:
        if count == 1:
            text = response.text.strip()
            if not _UUID4.fullmatch(text):
                raise malformed("/api/uuid", "something other than a version-4 UUID")
            return [text]
        return valid(response, count)

    parts = [({"count": n}, n) for n in split(count, limits.uuids)]
    return Plan("/api/uuid", parts, decode, _concat)


def document(response: httpx.Response, path: str) -> dict[str, Any]:
    """A JSON object answer (``/api/status``, ``/health``, the test reports)."""
    try:
        value = response.json()
    except ValueError:
        raise malformed(path, "a body that is not JSON") from None
    if not isinstance(value, dict):
        raise malformed(path, "something other than a JSON object")
    return value
