"""The simulator's ASGI app: the Quantis REST API v2.0 subset and the simulator-only controls.

Theory of operation
-------------------
`create_app` speaks the subset of the ID Quantique Quantis appliance REST API v2.0 that a
collector uses: ``GET /api/2.0/streambytes?size=N`` returns N raw bytes, ``int``, ``short`` and
``double`` return JSON arrays of numbers, ``systeminfo`` and ``firmwareinfo`` describe the device
and say plainly that it is a simulator. Integers are uniform by rejection sampling (no modulo
bias, full 32-bit range included); doubles carry 53 random bits.

Every byte any endpoint serves comes from one draw function, which applies the faults of
`qrng_dd.simulator.faults`. They are read on every request, so mutating the `Faults` object given
to `create_app` changes the running simulator. A test that runs the simulator as a separate
process uses the control endpoint instead: ``POST /sim/faults`` with a JSON object holding any
subset of the fields sets them (all or nothing, 400 on a bad value) and ``GET /sim/faults`` shows
them. ``GET /sim/stats`` counts the bytes the source has served since start (every endpoint, raw
bytes before rejection sampling) and how many of them were served while an output fault applied
(stuck, an effective bias above 0, or a replay), so an end-to-end test can prove that none of
those reached a pool. **The control endpoints exist only on this simulator**; a real Quantis has
nothing like them, and no part of qrng-dd other than tests may rely on them.

Validation happens before faults: a bad parameter always answers 400 with a JSON body, never a
500, so a collector bug is never hidden behind an injected failure. A stuck source can make
rejection sampling refuse every draw; then ``int``/``short`` answer 503, never a made-up number.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from dataclasses import asdict, fields, replace
from typing import Any, Final

import anyio
import numpy as np
import numpy.typing as npt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from qrng_dd import __version__
from qrng_dd.simulator.faults import (
    BitrateCap,
    Faults,
    check_fault,
    effective_bias,
    generate_bytes,
)

__all__ = ["MAX_QUANTITY", "MAX_STREAM_BYTES", "REPEAT_HISTORY_BYTES", "create_app"]

log = logging.getLogger(__name__)

# One streambytes answer is held in memory whole; 10 MiB bounds that per request.
MAX_STREAM_BYTES: Final = 10 * 1024 * 1024
# int/short/double answers are JSON: 100,000 doubles are about 2.5 MB of text, the same order
# as the largest streambytes answer.
MAX_QUANTITY: Final = 100_000
# The repeat fault replays from this much recent output, like a device buffer of stale data.
REPEAT_HISTORY_BYTES: Final = 1024 * 1024
# Rejection sampling accepts more than half of all draws, so 32 rounds fail only if the source
# is broken (stuck on a rejected value); then the answer is 503, never a biased number.
_MAX_REJECTION_ROUNDS: Final = 32

_INT_TEXT: Final = re.compile(r"[+-]?[0-9]{1,20}")
_FLOAT_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")

_SIMULATOR_NOTICE: Final = (
    "qrng-dd appliance SIMULATOR: NOT a quantum random number generator. "
    "Bytes come from the operating system CSPRNG (os.urandom). For development and tests only."
)

_ERROR_PAGE: Final = """<!DOCTYPE html>
<html>
<head><title>500 Internal Server Error</title></head>
<body>
<h1>500 Internal Server Error</h1>
<p>qrng-dd appliance simulator: injected fault (error_rate).</p>
</body>
</html>
"""


class _BadRequestError(Exception):
    """A query parameter is missing or out of range; answered 400 with its message."""


def _int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int:
    """Parse an integer query parameter in [lo, hi], strictly (no spaces, no ``1_000``)."""
    text = request.query_params.get(name)
    if text is None or text == "":
        if default is None:
            raise _BadRequestError(f"{name} is required: an integer from {lo} to {hi}")
        return default
    if not _INT_TEXT.fullmatch(text) or not lo <= int(text) <= hi:
        raise _BadRequestError(f"{name} must be an integer from {lo} to {hi}")
    return int(text)


def _float_param(request: Request, name: str, default: float) -> float:
    """Parse a finite float query parameter (no ``nan``, ``inf`` or overflow to them)."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if len(text) > 64 or not _FLOAT_TEXT.fullmatch(text) or not math.isfinite(float(text)):
        raise _BadRequestError(f"{name} must be a finite number")
    return float(text)


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": "bad_request", "detail": message}, status_code=400)


def _uniform_offsets(raw: bytes, width: int, span: int) -> npt.NDArray[np.uint64]:
    """Map `width`-byte draws to offsets uniform in [0, span), dropping the biased ones.

    Rejection sampling: a draw v is kept only if v < limit, the largest multiple of `span` that
    fits in the draw's range, so ``v % span`` has no modulo bias. Acceptance is above 1/2.
    """
    dtype = np.dtype(np.uint32) if width == 4 else np.dtype(np.uint16)
    draws = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(np.uint64)
    limit = ((1 << (8 * width)) // span) * span
    kept: npt.NDArray[np.uint64] = draws[draws < np.uint64(limit)] % np.uint64(span)
    return kept


class _Appliance:
    """The request handlers, sharing one `Faults` object, one `BitrateCap` and the source state.

    The source state is what `Faults` deliberately does not hold: the recent output the repeat
    fault replays, the bytes served since drift was set, and the /sim/stats counters.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.bucket = BitrateCap()
        # Fresh output only, trimmed from the front to REPEAT_HISTORY_BYTES.
        self.history = bytearray()
        # The drift value the count below belongs to, so an in-process change restarts it too.
        self.drift_set = faults.drift
        self.drift_served = 0
        self.served_bytes = 0
        self.faulty_bytes = 0
        self.repeated_bytes = 0

    async def _inject(self) -> Response | None:
        """Apply latency and error faults; return the error page when this request fails."""
        if self.faults.latency_ms > 0:
            await anyio.sleep(self.faults.latency_ms / 1000)
        if secrets.SystemRandom().random() < self.faults.error_rate:
            return HTMLResponse(_ERROR_PAGE, status_code=500)
        return None

    async def _draw(self, n: int) -> bytes:
        """Produce `n` source bytes, waiting as long as the bit-rate cap demands.

        Every byte any endpoint serves comes through here, so this is where the repeat and
        drift faults act and where /sim/stats counts. Nothing awaits after the wait, so
        concurrent draws cannot interleave their bookkeeping. The drifted bias is fixed for
        the whole draw, from the bytes served before it.
        """
        delay = self.bucket.reserve(8 * n, self.faults.max_bitrate)
        if delay > 0:
            await anyio.sleep(delay)
        faults = self.faults
        if faults.drift != self.drift_set:
            self._restart_drift()
        bias = effective_bias(faults.bias, faults.drift, self.drift_served)
        replayed = n <= len(self.history) and secrets.SystemRandom().random() < faults.repeat
        if replayed:
            start = secrets.randbelow(len(self.history) - n + 1)
            data = bytes(self.history[start : start + n])
        else:
            data = generate_bytes(n, replace(faults, bias=bias))
            self._remember(data)
        self.drift_served += n
        self.served_bytes += n
        if replayed or faults.stuck or bias > 0:
            self.faulty_bytes += n
        if replayed:
            self.repeated_bytes += n
        return data

    def _remember(self, data: bytes) -> None:
        """Keep the last REPEAT_HISTORY_BYTES of fresh output for the repeat fault.

        Replays are not remembered: the history models the device's buffer, which only the
        source writes, and a stale read does not write it back. So the replayable window
        stays the source's real recent production instead of collapsing onto copies of
        itself under ``repeat`` = 1, and a replay is still always bytes a client received.
        """
        if len(data) >= REPEAT_HISTORY_BYTES:
            self.history = bytearray(data[-REPEAT_HISTORY_BYTES:])
            return
        self.history += data
        excess = len(self.history) - REPEAT_HISTORY_BYTES
        if excess > 0:
            del self.history[:excess]

    def _restart_drift(self) -> None:
        self.drift_set = self.faults.drift
        self.drift_served = 0

    async def streambytes(self, request: Request) -> Response:
        try:
            size = _int_param(request, "size", None, 1, MAX_STREAM_BYTES)
        except _BadRequestError as err:
            return _bad_request(str(err))
        if (failed := await self._inject()) is not None:
            return failed
        return Response(await self._draw(size), media_type="application/octet-stream")

    async def _integers(self, request: Request, width: int) -> Response:
        """Answer int (4-byte draws) or short (2-byte draws) within the type's signed range."""
        bits = 8 * width
        type_lo, type_hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        try:
            quantity = _int_param(request, "quantity", 1, 1, MAX_QUANTITY)
            lo = _int_param(request, "min", 0, type_lo, type_hi)
            hi = _int_param(request, "max", type_hi, type_lo, type_hi)
            if lo > hi:
                raise _BadRequestError("min must not be greater than max")
        except _BadRequestError as err:
            return _bad_request(str(err))
        if (failed := await self._inject()) is not None:
            return failed
        span = hi - lo + 1
        accept = ((1 << bits) // span) * span / (1 << bits)
        parts: list[npt.NDArray[np.uint64]] = []
        have = 0
        for _ in range(_MAX_REJECTION_ROUNDS):
            need = quantity - have
            if need <= 0:
                break
            draws = math.ceil(need / accept * 1.05) + 8
            offsets = _uniform_offsets(await self._draw(draws * width), width, span)[:need]
            parts.append(offsets)
            have += len(offsets)
        if have < quantity:
            return JSONResponse(
                {"error": "source_failure", "detail": "the source keeps producing one value"},
                status_code=503,
            )
        values = np.concatenate(parts).astype(np.int64) + lo
        return JSONResponse(values.tolist())

    async def int_(self, request: Request) -> Response:
        return await self._integers(request, 4)

    async def short(self, request: Request) -> Response:
        return await self._integers(request, 2)

    async def double(self, request: Request) -> Response:
        """Answer floats uniform in [min, max), 53 random bits each."""
        try:
            quantity = _int_param(request, "quantity", 1, 1, MAX_QUANTITY)
            lo = _float_param(request, "min", 0.0)
            hi = _float_param(request, "max", 1.0)
            if not lo < hi or not math.isfinite(hi - lo):
                raise _BadRequestError("min must be less than max, both finite")
        except _BadRequestError as err:
            return _bad_request(str(err))
        if (failed := await self._inject()) is not None:
            return failed
        raw = await self._draw(8 * quantity)
        draws = np.frombuffer(raw, dtype=np.dtype(np.uint64).newbyteorder("<"))
        unit = (draws >> np.uint64(11)).astype(np.float64) * 2.0**-53
        # lo + unit * (hi - lo) can round up to hi itself; the interval is half-open.
        values = np.minimum(lo + unit * (hi - lo), np.nextafter(hi, -math.inf))
        return JSONResponse(values.tolist())

    def _describe(self, kind: str) -> dict[str, object]:
        return {
            "simulator": True,
            "quantum": False,
            "entropy_source": "os.urandom (operating-system CSPRNG)",
            "notice": _SIMULATOR_NOTICE,
            "kind": kind,
            "api_version": "2.0",
        }

    async def systeminfo(self, request: Request) -> Response:
        if (failed := await self._inject()) is not None:
            return failed
        info = self._describe("systeminfo")
        info |= {
            "model": "qrng-dd Quantis-compatible appliance simulator",
            "serial": "SIMULATOR",
            "devices": [{"type": "simulator", "quantum": False, "status": "ok"}],
            "faults": asdict(self.faults),
        }
        return JSONResponse(info)

    async def firmwareinfo(self, request: Request) -> Response:
        if (failed := await self._inject()) is not None:
            return failed
        info = self._describe("firmwareinfo")
        info |= {"firmware": f"qrng-dd-simulator {__version__}", "version": __version__}
        return JSONResponse(info)

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(asdict(self.faults))

    async def set_faults(self, request: Request) -> Response:
        """Set any subset of the faults from a JSON object: all of them or, on error, none."""
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _bad_request("body must be a JSON object")
        if not isinstance(body, dict):
            return _bad_request("body must be a JSON object")
        known = {f.name for f in fields(Faults)}
        changes: dict[str, Any] = {}
        for name, value in body.items():
            if name not in known:
                return _bad_request(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
            try:
                changes[name] = check_fault(name, value)
            except ValueError as err:
                return _bad_request(str(err))
        for name, value in changes.items():
            setattr(self.faults, name, value)
        if "drift" in changes:
            # Setting drift, even to its current value, starts the degradation over.
            self._restart_drift()
        if changes:
            log.warning("appliance simulator faults set: %s", changes)
        return JSONResponse(asdict(self.faults))

    async def get_stats(self, request: Request) -> Response:
        """Count served bytes since start; faulty ones were served while an output fault applied."""
        return JSONResponse(
            {
                "served_bytes": self.served_bytes,
                "faulty_bytes": self.faulty_bytes,
                "healthy_bytes": self.served_bytes - self.faulty_bytes,
                "repeated_bytes": self.repeated_bytes,
            }
        )


def create_app(faults: Faults) -> Starlette:
    """Build the simulator's ASGI app.

    Args:
        faults: read on every request; mutate it (or POST ``/sim/faults``) to change behaviour.

    Returns:
        A Starlette app serving ``/api/2.0/*`` and the simulator-only ``/sim/faults`` and
        ``/sim/stats``.

    Raises:
        ValueError: if `faults` holds a bad value.
    """
    faults.validate()
    appliance = _Appliance(faults)
    routes = [
        Route("/api/2.0/streambytes", appliance.streambytes, methods=["GET"]),
        Route("/api/2.0/int", appliance.int_, methods=["GET"]),
        Route("/api/2.0/short", appliance.short, methods=["GET"]),
        Route("/api/2.0/double", appliance.double, methods=["GET"]),
        Route("/api/2.0/systeminfo", appliance.systeminfo, methods=["GET"]),
        Route("/api/2.0/firmwareinfo", appliance.firmwareinfo, methods=["GET"]),
        Route("/sim/faults", appliance.get_faults, methods=["GET"]),
        Route("/sim/faults", appliance.set_faults, methods=["POST"]),
        Route("/sim/stats", appliance.get_stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.faults = faults
    return app
