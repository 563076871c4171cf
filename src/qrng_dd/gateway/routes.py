"""The gateway's routes, in one table (DESIGN §5).

The front serves exactly these, the OpenAPI document describes exactly these and the MCP
tools take their input schemas from these. Adding a route is one entry here, its handler in
:mod:`qrng_dd.gateway.handlers`, and its test.
"""

from __future__ import annotations

from typing import Final

from qrng_dd.gateway import derive, handlers, shaped
from qrng_dd.gateway.api import ENTROPY_ERRORS, Args, Content, Param, Route
from qrng_dd.gateway.compat import anu, randomorg
from qrng_dd.gateway.problem import bad_parameter

#: Byte cost of one value, the same through every way out.
BYTES_PER_INTEGER: Final = 8
BYTES_PER_FLOAT: Final = 8
BYTES_PER_UUID: Final = 16
BYTES_PER_POINT: Final = 16

#: What the MCP tools state for ``bytes``: the default QRNG_MAX_REQUEST_BYTES.
DEFAULT_MAX_REQUEST_BYTES: Final = 65_536
MAX_COUNT: Final = 1000
MAX_UUIDS: Final = 100
MAX_ITERATIONS: Final = 10_000_000
DEFAULT_SELFTEST_BYTES: Final = 125_000
MIN_SELFTEST_BYTES: Final = 2_500

_INT64: Final = {"type": "integer", "minimum": derive.INT64_MIN, "maximum": derive.INT64_MAX}
_OBJECT: Final = {"type": "object"}


def _count(what: str, high: int, default: int) -> Param:
    return Param("count", f"how many {what}, 1 to {high}", default, 1, high)


def _check_bounds(args: Args) -> None:
    if args["min"] > args["max"]:
        raise bad_parameter(f"'min' ({args['min']}) must not be greater than 'max' ({args['max']})")


def _integers_bound(args: Args) -> int:
    return derive.read_bound(derive.integer_reads(args["count"], args["min"], args["max"]))


def _bytes(args: Args) -> int:
    n: int = args["bytes"]
    return n


_OWN: Final[tuple[Route, ...]] = (
    Route(
        "random",
        "/api/random",
        ("GET",),
        "Random bytes",
        handlers.random,
        params=(
            Param(
                "bytes",
                "how many bytes (at most QRNG_MAX_REQUEST_BYTES and the pool's capacity)",
                32,
                1,
                lambda s: min(s.max_request_bytes, s.buffer_size),
                cap=DEFAULT_MAX_REQUEST_BYTES,
            ),
            Param(
                "encoding",
                "hex (lowercase), base64 (padded) or binary",
                "hex",
                choices=derive.ENCODINGS,
            ),
        ),
        cost=_bytes,
        ok="Lowercase hex, padded base64, or raw bytes",
        content=(
            Content("text/plain", {"type": "string"}),
            Content("application/octet-stream", {"type": "string", "format": "binary"}),
        ),
        errors=ENTROPY_ERRORS,
    ),
    Route(
        "integers",
        "/api/integers",
        ("GET",),
        "Uniform integers in [min, max] (rejection sampling, no bias)",
        handlers.integers,
        params=(
            _count("integers", MAX_COUNT, 10),
            Param(
                "min",
                "smallest value (inclusive), signed 64-bit; <= max",
                0,
                derive.INT64_MIN,
                derive.INT64_MAX,
            ),
            Param(
                "max",
                "largest value (inclusive), signed 64-bit; >= min",
                100,
                derive.INT64_MIN,
                derive.INT64_MAX,
            ),
        ),
        check=_check_bounds,
        cost=lambda args: BYTES_PER_INTEGER * args["count"],
        bound=_integers_bound,
        ok="The integers",
        content=(Content("application/json", {"type": "array", "items": _INT64}),),
        errors=ENTROPY_ERRORS,
    ),
    Route(
        "floats",
        "/api/floats",
        ("GET",),
        "Floats in [0, 1), 53 random bits each",
        handlers.floats,
        params=(_count("floats", MAX_COUNT, 10),),
        cost=lambda args: BYTES_PER_FLOAT * args["count"],
        ok="The floats",
        content=(
            Content(
                "application/json",
                {
                    "type": "array",
                    "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                },
            ),
        ),
        errors=ENTROPY_ERRORS,
    ),
    Route(
        "uuid",
        "/api/uuid",
        ("GET",),
        "RFC 9562 version-4 UUIDs",
        handlers.uuid,
        params=(_count("UUIDs", MAX_UUIDS, 1),),
        cost=lambda args: BYTES_PER_UUID * args["count"],
        ok="One UUID as text/plain, several as a JSON array",
        content=(
            Content("text/plain", {"type": "string", "format": "uuid"}),
            Content(
                "application/json", {"type": "array", "items": {"type": "string", "format": "uuid"}}
            ),
        ),
        errors=ENTROPY_ERRORS,
    ),
    Route(
        "monte_carlo",
        "/api/test/monte-carlo",
        ("GET", "POST"),
        "Estimate pi from pool bytes (the seed's quality check)",
        handlers.monte_carlo,
        params=(
            Param(
                "iterations",
                f"points, {BYTES_PER_POINT} bytes each (at most what the pool can hold)",
                100_000,
                1,
                lambda s: min(MAX_ITERATIONS, s.buffer_size // BYTES_PER_POINT),
                cap=MAX_ITERATIONS,
            ),
        ),
        cost=lambda args: BYTES_PER_POINT * args["iterations"],
        ok="The estimate",
        content=(Content("application/json", _OBJECT),),
        errors=ENTROPY_ERRORS,
    ),
    Route(
        "randomness",
        "/api/test/randomness",
        ("GET", "POST"),
        "FIPS 140-2 and SP 800-22 tests on pool bytes",
        handlers.randomness,
        params=(
            Param(
                "bytes",
                "bytes to test (taken from the pool; at most its capacity)",
                lambda s: min(DEFAULT_SELFTEST_BYTES, s.buffer_size),
                MIN_SELFTEST_BYTES,
                lambda s: s.buffer_size,
            ),
        ),
        cost=_bytes,
        ok="The report",
        content=(Content("application/json", _OBJECT),),
        errors=ENTROPY_ERRORS,
    ),
    Route(
        "status",
        "/api/status",
        ("GET",),
        "Pool, sources, refusals and warnings",
        handlers.status,
        ok="Status",
        content=(Content("application/json", _OBJECT),),
        errors={401: ENTROPY_ERRORS[401]},
    ),
    Route(
        "health",
        "/health",
        ("GET",),
        "Health for load balancers (no auth)",
        handlers.health,
        auth=False,
        ok="healthy (>= 30 %) or degraded; 503 when unhealthy (< 10 % full)",
        content=(Content("application/json", _OBJECT),),
        also={503: "unhealthy: the same JSON object, with status 'unhealthy'"},
    ),
    Route(
        "metrics",
        "/metrics",
        ("GET",),
        "Prometheus metrics (no auth)",
        handlers.metrics,
        auth=False,
        ok="Prometheus text format",
        content=(Content("text/plain", {"type": "string"}),),
    ),
    Route(
        "push",
        "/push",
        ("POST",),
        "Ingest one wire-format v1 packet (the packet's tag is the credential)",
        body_handler=handlers.push,
        auth=False,
        ok="Accepted",
        content=(Content("application/json", _OBJECT),),
        request_body=Content("application/x-msgpack", {"type": "string", "format": "binary"}),
        errors={
            400: "malformed, bad_crc, stale, future or decrypt",
            401: "bad_mac",
            403: "wrong_dest",
            408: "the body did not arrive within QRNG_BODY_TIMEOUT_S; send again",
            409: "replay",
            413: "oversize",
            503: "QRNG_MAX_PUSH_BODIES bodies are being read already (send again), or the "
            "packet's sequence could not be made durable and its bytes were dropped",
            507: "Pool full; the packet was not consumed",
        },
    ),
    Route(
        "openapi",
        "/openapi.json",
        ("GET",),
        "This document",
        handlers.openapi,
        auth=False,
        ok="OpenAPI",
        content=(Content("application/json", _OBJECT),),
    ),
    Route(
        "docs",
        "/docs",
        ("GET",),
        "An HTML viewer of this document",
        handlers.docs,
        auth=False,
        ok="HTML",
        content=(Content("text/html", {"type": "string"}),),
    ),
)

#: Every route: our own API, then the compatibility APIs (each a set of entries of its own).
ROUTES: Final[tuple[Route, ...]] = (*_OWN, *shaped.ROUTES, *anu.ROUTES, *randomorg.ROUTES)

#: The table by route name.
BY_NAME: Final = {route.name: route for route in ROUTES}
