"""RANDOM.ORG's JSON-RPC 4 basic API at ``POST /json-rpc/4/invoke``, served from the pool.

A client written for RANDOM.ORG (its official ``rdoclient`` among them) works unchanged once
its endpoint points here. ``params.apiKey`` is one of this gateway's API keys: the one
:class:`~qrng_dd.gateway.policy.Policy` authenticates and charges it, as on every other way
out, and the answer carries the same no-store and RateLimit fields. ``bitsLeft`` and
``requestsLeft`` are what is left of the key's byte budget and request bucket, and
:data:`UNLIMITED` without a byte budget: RANDOM.ORG counts per day, this gateway per second.

Every answer is HTTP 200 with a JSON-RPC body, an ``error`` member when refused, as RANDOM.ORG
answers: its own codes for parameters (200, 201, 202, 300, 301, see
:mod:`.randomorg_methods`), for the key (400) and for allowances (402 requests, 403 bits, as
``rdoclient`` reads them); JSON-RPC's for the envelope (-32700, -32600, -32601, -32602); and
:data:`SHORT_OF_ENTROPY` when the pool runs short, with a retry hint. Never a 500 for
anything a client sent.

A key is charged as on the REST routes: one request and the bytes the answer needs, before
anything is drawn or computed, so a refused request costs neither entropy nor work. Rejection
sampling may read more; ``bitsUsed`` counts every byte the pool served.

A request that may read more than the pool can ever hold is refused with RANDOM.ORG's 202
naming its count parameter, never :data:`SHORT_OF_ENTROPY` and "retry" forever. What is
compared with the capacity is the most it may read (:attr:`.Draw.most`): the bytes it needs,
or, under rejection sampling (an integer range that does not divide 2^64, an alphabet that
does not divide 256), a bound on what it reads that is exceeded with a chance below 2^-38.
Comparing the need alone would pass a request whose draws overrun even a full pool.
"""

from __future__ import annotations

import json
import math
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from qrng_dd.errors import EntropyExhaustedError
from qrng_dd.gateway.api import JSON, Call, Content, Reply, Route, read_body
from qrng_dd.gateway.compat.randomorg_methods import (
    METHODS,
    Params,
    RpcError,
    invalid_params,
    kind,
    malformed,
    out_of_range,
    prepare,
)
from qrng_dd.gateway.problem import Problem

if TYPE_CHECKING:
    from qrng_dd.gateway.derive import Reader
    from qrng_dd.gateway.service import EntropyService

PATH: Final = "/json-rpc/4/invoke"
#: Request bodies are a few hundred bytes (``characters`` is at most 128 characters).
MAX_BODY: Final = 65_536
#: ``bitsLeft`` / ``requestsLeft`` of a limit that is off: the largest signed 32-bit integer,
#: so a client that keeps the count in an ``int`` holds it.
UNLIMITED: Final = 2**31 - 1
#: Short of entropy: a server error, which JSON-RPC 2.0 leaves to the implementation
#: (-32000 to -32099); ``rdoclient`` raises it as a RuntimeError.
SHORT_OF_ENTROPY: Final = -32001
#: Methods of RANDOM.ORG's Signed API: no RANDOM.ORG signature can come from here.
_SIGNED: Final = ("generateSigned", "getResult", "createTickets", "revealTickets",
                  "listTickets", "getTicket", "verifySignature")  # fmt: skip
# ASCII only: a lone surrogate echoed from a request (an ``id``) still encodes.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
#: Per gateway, per key: bits served and requests answered, for ``getUsage``.
_TOTALS: Final[weakref.WeakKeyDictionary[EntropyService, dict[str, list[int]]]] = (
    weakref.WeakKeyDictionary()
)


async def invoke(call: Call) -> Reply:
    """One JSON-RPC request in, one JSON-RPC response out, HTTP 200 either way."""
    service = call.service
    request_id: Any = None
    key = ""
    headers: dict[str, str] = {}
    try:
        request = _parse(await _body(call))
        if isinstance(request, dict) and _valid_id(request.get("id")):
            request_id = request.get("id")
        method, params = _envelope(request)
        key = _authenticate(service, params)
        if method == "getUsage":
            result = _usage(service, key, params)
        else:
            result = _generate(service, key, method, params)
        answer = {"jsonrpc": "2.0", "result": result, "id": request_id}
    except RpcError as err:
        headers = err.headers
        error = {"code": err.code, "message": err.message, "data": err.data}
        answer = {"jsonrpc": "2.0", "error": error, "id": request_id}
    reply = Reply(_ENCODER.encode(answer).encode("ascii"), JSON, 200, headers or None)
    if key:
        # As on every way out: no-store, and what is left of the key's limits.
        reply.extra = service.policy.raw_headers(key)
    return reply


async def _body(call: Call) -> bytes:
    """The request body, refused as soon as it passes :data:`MAX_BODY`."""
    body = await read_body(call, MAX_BODY)
    if body is None:
        raise RpcError(-32600, f"Invalid Request: the body is over {MAX_BODY} bytes")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _parse(body: bytes) -> Any:
    """The JSON value of ``body``: UTF-8 (or -16, -32), no NaN or Infinity. Raises: -32700."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RpcError(-32700, "Parse error: the body is not one JSON value") from None


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _invalid(why: str) -> RpcError:
    return RpcError(-32600, f"Invalid Request: {why}")


def _envelope(request: Any) -> tuple[str, dict[str, Any]]:
    """The method and the named parameters of one JSON-RPC 2.0 request object."""
    if isinstance(request, list):
        raise _invalid("batch requests are not served; send one request object per call")
    if not isinstance(request, dict):
        raise _invalid(f"the body must be a request object, got {kind(request)}")
    if request.get("jsonrpc") != "2.0":
        raise _invalid("'jsonrpc' must be \"2.0\"")
    if "id" not in request or not _valid_id(request["id"]):
        raise _invalid("'id' is required, and must be a string, a number or null")
    method = request.get("method")
    if not isinstance(method, str):
        raise _invalid(f"'method' must be a string, got {kind(method)}")
    if method != "getUsage" and method not in METHODS:
        why = ""
        if method.startswith(_SIGNED):
            why = ": it is RANDOM.ORG's Signed API, and no RANDOM.ORG signature comes from here"
        raise RpcError(-32601, f"Method not found: {method[:40]!a}{why}", [method[:40]])
    params = request.get("params")
    if not isinstance(params, dict):
        raise invalid_params(f"'params' must be an object, got {kind(params)}", ["params"])
    return method, params


def _authenticate(service: EntropyService, params: dict[str, Any]) -> str:
    """The gateway key ``params.apiKey`` names. Raises: 400 for a key that is not one."""
    if "apiKey" not in params:
        raise invalid_params("'apiKey' is required", ["apiKey"])
    api_key = params["apiKey"]
    if not isinstance(api_key, str):
        raise malformed("apiKey", f"a string is expected, got {kind(api_key)}")
    try:
        return service.policy.authenticate(None, api_key)
    except Problem:
        raise RpcError(
            400, "The API key you specified does not exist: parameter 'apiKey' is not one of "
            "this gateway's keys", ["apiKey"],
        ) from None  # fmt: skip


def _time(stamp: float) -> str:
    """RANDOM.ORG's timestamps: UTC, ``2011-10-10 13:19:12Z``."""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _totals(service: EntropyService, key: str) -> list[int]:
    """``[bits served, requests answered]`` of ``key`` on this gateway (mutable)."""
    return _TOTALS.setdefault(service, {}).setdefault(key, [0, 0])


def _left(service: EntropyService, key: str) -> tuple[int, int]:
    """``(bitsLeft, requestsLeft)``: what the key's byte budget and request bucket hold."""
    budget = service.policy.budget(key)
    requests = budget["requests"]["remaining"] if "requests" in budget else UNLIMITED
    bits = 8 * budget["bytes"]["remaining"] if "bytes" in budget else UNLIMITED
    return min(UNLIMITED, bits), min(UNLIMITED, requests)


def _usage(service: EntropyService, key: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``getUsage``: the key's state, as RANDOM.ORG words it. It draws nothing and, like
    ``/api/status``, costs nothing; ``advisoryDelay`` is added so that ``rdoclient`` does
    not wait its default second before the next request."""
    Params(raw).done()
    bits, requests = _left(service, key)
    total_bits, total_requests = _totals(service, key)
    return {
        "status": "running",
        "creationTime": _time(service.started),  # keys live as long as the gateway
        "bitsLeft": bits,
        "requestsLeft": requests,
        "totalBits": total_bits,
        "totalRequests": total_requests,
        "advisoryDelay": 0,
    }


def _refused(service: EntropyService, key: str, problem: Problem, nbytes: int) -> RpcError:
    """The policy's 429 as RANDOM.ORG's allowance errors: 402 when the request bucket is
    empty, else 403 (the byte budget), both with RANDOM.ORG's data ``[needed, left]``."""
    wait = problem.retry_after or 1
    retry = {"Retry-After": str(wait)}
    bits, requests = _left(service, key)
    if requests < 1:
        rate = service.settings.rate_limit
        message = (
            f"The operation requires 1 request, but the API key only has 0 left: parameter "
            f"'apiKey' may make {rate:g} requests a second; retry in {wait} s"
        )
        return RpcError(402, message, [1, 0], retry)
    message = (
        f"The operation requires {8 * nbytes} bits, but the API key only has {bits} left: "
        f"parameter 'apiKey' is over its byte budget; retry in {wait} s"
    )
    return RpcError(403, message, [8 * nbytes, bits], retry)


def _short(service: EntropyService, err: EntropyExhaustedError) -> RpcError:
    wait = service.retry_after()
    message = (
        f"Short of entropy: the pool holds {err.available} bytes and this request needs "
        f"{err.requested}; nothing was taken, retry in {wait} s"
    )
    data = {"requested": err.requested, "available": err.available, "retryAfter": wait}
    return RpcError(SHORT_OF_ENTROPY, message, data, {"Retry-After": str(wait)})


def _generate(service: EntropyService, key: str, method: str, raw: dict[str, Any]) -> Any:
    """Check, charge, draw: one generate method."""
    draw = prepare(method, raw)
    capacity = service.pool.capacity
    if draw.most > capacity:
        # Never servable: refused naming the count, not "retry" forever (DESIGN §5).
        got = (
            f"a request for at least {draw.need} bytes"
            if draw.most == draw.need
            else f"a request that may read up to {draw.most} bytes (rejection sampling)"
        )
        raise out_of_range(draw.blame, f"what this gateway's pool holds ({capacity} bytes)", got)

    try:
        service.charge(key, draw.need)
    except Problem as problem:  # 429: nothing was charged
        raise _refused(service, key, problem, draw.need) from None

    def run(read: Reader) -> tuple[Any, int]:
        used = 0

        def counted(n: int) -> bytes:
            nonlocal used
            data = read(n)
            used += n
            return data

        return draw.make(counted), used

    try:
        values, used = service.derive(run)
    except EntropyExhaustedError as err:
        raise _short(service, err) from None
    totals = _totals(service, key)
    totals[0] += 8 * used
    totals[1] += 1
    bits, requests = _left(service, key)
    # Empty bucket: ask the client to wait for one request's worth (rdoclient obeys).
    delay = 0 if requests >= 1 else math.ceil(1000 / service.settings.rate_limit)
    return {
        "random": {"data": values, "completionTime": _time(service.clock())},
        "bitsUsed": 8 * used,
        "bitsLeft": bits,
        "requestsLeft": requests,
        "advisoryDelay": delay,
    }


_NAMES: Final = ["getUsage", *METHODS]
_REQUEST: Final = {
    "type": "object",
    "required": ["jsonrpc", "method", "params", "id"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "method": {"enum": _NAMES},
        "params": {"type": "object", "required": ["apiKey"]},
        "id": {"type": ["string", "number", "null"]},
    },
}
_RESPONSE: Final = {
    "type": "object",
    "required": ["jsonrpc", "id"],
    "properties": {"jsonrpc": {"const": "2.0"}, "result": {"type": "object"},
                   "error": {"type": "object"}, "id": {}},
}  # fmt: skip

ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "randomorg",
        PATH,
        ("POST",),
        "RANDOM.ORG JSON-RPC 4 basic API: " + ", ".join(_NAMES),
        body_handler=invoke,
        auth=False,  # the key is params.apiKey, checked by the same policy in the handler
        ok="A JSON-RPC 2.0 response: result, or error with RANDOM.ORG's code (always HTTP 200)",
        content=(Content(JSON, _RESPONSE),),
        request_body=Content(JSON, _REQUEST),
    ),
)
