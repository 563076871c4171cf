"""A Quantis-compatible appliance simulator with fault injection (DESIGN §9).

Theory of operation
-------------------
`create_app` speaks the subset of the ID Quantique Quantis appliance REST API v2.0 that a
collector uses: ``GET /api/2.0/streambytes?size=N`` returns N raw bytes, ``int``, ``short`` and
``double`` return JSON arrays of numbers, ``systeminfo`` and ``firmwareinfo`` describe the device.
The collector (DESIGN §6) fetches from it exactly as from a real appliance, so the whole
pipeline can be exercised on a laptop, in CI and by ``qrng-dd demo``. Integers are uniform by
rejection sampling (no modulo bias, full 32-bit range included); doubles carry 53 random bits.

**This is not a quantum device.** Every byte comes from the operating system's CSPRNG
(``os.urandom``); ``systeminfo`` and ``firmwareinfo`` say so in plain words, so nobody mistakes a
demo for a deployment.

Faults (`Faults`) make it misbehave the way real appliances and the networks in front of them do,
so the collector's backoff, health tests (P5) and honest failure (P4) can be tested:

- ``error_rate``: that fraction of API requests answers 500 with an HTML page, as a reverse proxy
  in front of a dead appliance would (the collector must not expect JSON on errors).
- ``latency_ms``: added to every API request before it is answered.
- ``stuck``: the source emits one repeated byte value (``0xA5``, deliberately balanced in ones and
  zeros, so only the repetition-count test can catch it, not a bit counter).
- ``bias``: each output bit is 1 with probability ``0.5 + bias / 2``.
- ``max_bitrate``: a token bucket caps the source at that many bits per second, like a 4 Mbit/s or
  16 Mbit/s Quantis. A request larger than the bucket holds is not refused: it waits until the
  device would have produced its bits, which is what a real appliance does.
- ``repeat``: that fraction of draws replays old output, as a source whose buffer serves stale
  data: the draw is a contiguous copy of bytes already served, from a uniformly random position
  in the last 1 MiB of output. Every bit looks fair, so only a duplicate check can catch it. A
  draw larger than the history held so far is always fresh.
- ``drift``: the source degrades as it works: the effective bias is
  ``min(1, bias + drift * MiB served since drift was set)``. It is counted in bytes served, not
  wall time, so a test reproduces it exactly; setting ``drift`` again restarts the count.

Faults are read on every request, so mutating the `Faults` object given to `create_app` changes
the running simulator. A test that runs the simulator as a separate process uses the control
endpoint instead: ``POST /sim/faults`` with a JSON object holding any subset of the fields sets
them (all or nothing, 400 on a bad value) and ``GET /sim/faults`` shows them. ``GET /sim/stats``
counts the bytes the source has served since start (every endpoint, raw bytes before rejection
sampling) and how many of them were served while an output fault applied (stuck, an effective
bias above 0, or a replay), so an end-to-end test can prove that none of those reached a pool.
**The control endpoints exist only on this simulator**; a real Quantis has nothing like them, and
no part of qrng-dd other than tests may rely on them.

Validation happens before faults: a bad parameter always answers 400 with a JSON body, never a
500, so a collector bug is never hidden behind an injected failure. A stuck source can make
rejection sampling refuse every draw; then ``int``/``short`` answer 503, never a made-up number.

`serve_appliance` runs the app under uvicorn inside the caller's event loop (the all-in-one demo
embeds it), optionally over HTTPS with a self-signed certificate it generates for 127.0.0.1 and
localhost (`generate_self_signed`; the path is published on `ApplianceAddress.cert_path`, the
private key file is deleted as soon as uvicorn has loaded it). A SIGINT or SIGTERM is re-raised
only after that cleanup. `add_arguments` and `run` are the ``qrng-dd appliance`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import FrameType
from typing import Any, Final

import anyio
import numpy as np
import numpy.typing as npt
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from qrng_dd import __version__

__all__ = [
    "ApplianceAddress",
    "Faults",
    "TokenBucket",
    "add_arguments",
    "create_app",
    "effective_bias",
    "generate_bytes",
    "generate_self_signed",
    "run",
    "serve_appliance",
]

log = logging.getLogger(__name__)

# One streambytes answer is held in memory whole; 10 MiB bounds that per request.
MAX_STREAM_BYTES: Final = 10 * 1024 * 1024
# int/short/double answers are JSON: 100,000 doubles are about 2.5 MB of text, the same order
# as the largest streambytes answer.
MAX_QUANTITY: Final = 100_000
# A sleep longer than an hour is a typo, and huge values overflow the event loop's timer.
MAX_LATENCY_MS: Final = 3_600_000

# The repeat fault replays from this much recent output, like a device buffer of stale data.
REPEAT_HISTORY_BYTES: Final = 1024 * 1024
# drift is bias gained per MiB served.
_MIB: Final = 1024 * 1024

# Balanced (four ones, four zeros): a stuck source must be caught by the repetition-count test.
_STUCK_BYTE: Final = 0xA5
# A real device buffers only a little: a burst of 100 ms keeps the cap visible to a collector
# that idles between fetches, where a one-second bucket would hide it.
_BURST_SECONDS: Final = 0.1
# Bias masks are built this many output bytes at a time, so a 10 MiB request needs 16 MiB of
# scratch (two bytes per bit), not 160 MiB.
_BIAS_CHUNK: Final = 1024 * 1024
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


@dataclass
class Faults:
    """The simulator's current misbehaviour; mutable, read on every request.

    Attributes:
        error_rate: fraction of API requests, 0 to 1, answered 500 with an HTML page.
        latency_ms: delay added to every API request, in milliseconds.
        stuck: the source emits one repeated byte value.
        bias: 0 to 1; each bit is 1 with probability ``0.5 + bias / 2``.
        max_bitrate: source speed cap in bits per second; 0 means no cap.
        repeat: fraction of draws, 0 to 1, that replay earlier output instead of fresh bytes.
        drift: bias added per MiB served since drift was set, 0 or more (see `effective_bias`).
            Only the configured rate lives here; the simulator counts the bytes.
    """

    error_rate: float = 0.0
    latency_ms: int = 0
    stuck: bool = False
    bias: float = 0.0
    max_bitrate: int = 0
    repeat: float = 0.0
    drift: float = 0.0

    def validate(self) -> None:
        """Check every field, so a bad value fails at start and not on the first request.

        Raises:
            ValueError: naming the first bad field and its allowed range.
        """
        for name, value in asdict(self).items():
            _check_fault(name, value)


def _check_fault(name: str, value: object) -> Any:
    """Return `value` if it is valid for the `Faults` field `name`, as that field's type.

    Booleans are refused for numeric fields (JSON ``true`` is not ``1`` here) and numbers for
    ``stuck``, so a typo in a control request cannot silently flip a fault. Callers pass only
    known field names.

    Raises:
        ValueError: naming the field and its allowed values.
    """
    if name == "stuck":
        if not isinstance(value, bool):
            raise ValueError("stuck must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if name in ("error_rate", "bias", "repeat", "drift"):
        try:
            number = float(value)
        except OverflowError:
            # A JSON integer too large for a float is out of range, not a crash (500).
            number = math.inf
        if name == "drift":
            if not (math.isfinite(number) and number >= 0):
                raise ValueError("drift must be a finite number, at least 0")
        elif not (math.isfinite(number) and 0 <= number <= 1):
            raise ValueError(f"{name} must be between 0 and 1")
        return number
    # latency_ms and max_bitrate: whole numbers; 8e6 from a JSON document is fine.
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{name} must be a whole number")
        value = int(value)
    if name == "latency_ms" and not 0 <= value <= MAX_LATENCY_MS:
        raise ValueError(f"latency_ms must be between 0 and {MAX_LATENCY_MS}")
    if value < 0:
        raise ValueError(f"{name} must be at least 0")
    return value


class TokenBucket:
    """A bit-rate cap that makes requests wait, never fail (the device is slow, not broken).

    The bucket runs into debt: `reserve` always takes the bits and returns how long the caller
    must wait until the device would have produced them. Concurrent requests therefore queue in
    arrival order, each waiting behind the debt of those before it, as reads from one serial
    device do. The rate is passed on every call, so a fault change takes effect at once. The
    clock is injectable so the arithmetic is tested without sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = 0
        self._tokens = 0.0
        self._last = clock()

    def reserve(self, bits: int, rate: int) -> float:
        """Take `bits` from the bucket and return the seconds to wait before answering.

        Args:
            bits: how many bits the request consumes.
            rate: the current cap in bits per second; 0 or less means no cap.

        Returns:
            0.0 when the bits were available, else the time until the debt is paid back.
        """
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        if rate <= 0:
            self._rate = 0
            return 0.0
        capacity = rate * _BURST_SECONDS
        if self._rate == 0:
            # Cap just switched on: start with a full buffer, as a device that has been idle.
            self._tokens = capacity
        else:
            self._tokens = min(capacity, self._tokens + elapsed * rate)
        self._rate = rate
        self._tokens -= bits
        return 0.0 if self._tokens >= 0 else -self._tokens / rate


def effective_bias(bias: float, drift: float, served_bytes: int) -> float:
    """Return the bias a drifting source has after serving `served_bytes` since drift was set.

    The source loses `drift` of bias per MiB it serves, capped at 1 (every bit a one). Bytes,
    not seconds, so a test gets the same bias on every run whatever the machine's speed.

    Args:
        bias: the configured base bias, 0 to 1.
        drift: bias gained per MiB served, 0 or more.
        served_bytes: bytes served since drift was set.

    Returns:
        ``min(1, bias + drift * served_bytes / 2**20)``.
    """
    if drift <= 0:
        return bias
    return min(1.0, bias + drift * served_bytes / _MIB)


def generate_bytes(n: int, faults: Faults) -> bytes:
    """Return `n` bytes as the simulated source emits them under `faults`.

    Uniform bytes come from ``os.urandom``. With ``stuck`` every byte is ``0xA5``. With
    ``bias`` each byte is OR-ed with a mask whose bits are 1 with probability ``bias``, which
    makes each output bit 1 with probability ``0.5 + bias / 2``. The mask models a hardware
    defect, so it comes from numpy's fast generator (seeded from ``os.urandom``), vectorised;
    its own quality is no security property.

    Args:
        n: how many bytes, 0 or more.
        faults: the faults to apply (only ``stuck`` and ``bias`` matter here; the caller
            passes the drifted bias in, so this function keeps no state).

    Returns:
        Exactly `n` bytes.
    """
    if faults.stuck:
        return bytes([_STUCK_BYTE]) * n
    raw = os.urandom(n)
    if faults.bias <= 0 or n == 0:
        return raw
    threshold = round(faults.bias * 65536)
    if threshold >= 65536:
        return b"\xff" * n
    rng = np.random.default_rng(int.from_bytes(os.urandom(32), "big"))
    out = np.frombuffer(raw, dtype=np.uint8).copy()
    for start in range(0, n, _BIAS_CHUNK):
        stop = min(n, start + _BIAS_CHUNK)
        draws = rng.integers(0, 65536, size=(stop - start) * 8, dtype=np.uint16)
        out[start:stop] |= np.packbits(draws < threshold)
    return out.tobytes()


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
    """The request handlers, sharing one `Faults` object, one `TokenBucket` and the source state.

    The source state is what `Faults` deliberately does not hold: the recent output the repeat
    fault replays, the bytes served since drift was set, and the /sim/stats counters.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.bucket = TokenBucket()
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
                changes[name] = _check_fault(name, value)
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


def generate_self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1, ::1 and localhost into `directory`.

    Appliances ship self-signed certificates (DESIGN §6); this one lets the collector's
    ``QRNG_APPLIANCE_CA_FILE`` path be tested for real. The certificate is its own trust
    anchor, so it carries the extensions a strict verifier (``VERIFY_X509_STRICT``) wants. The
    key file is created with mode 0600 and its contents are never logged.

    Args:
        directory: an existing directory, private to the caller.

    Returns:
        ``(cert_path, key_path)``, both PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qrng-dd appliance simulator")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "appliance-cert.pem"
    key_path = directory / "appliance-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key_pem)
    return cert_path, key_path


@dataclass
class ApplianceAddress:
    """Where a running simulator listens; `serve_appliance` fills it in before `ready` is set.

    Attributes:
        url: base URL, e.g. ``https://127.0.0.1:8443``, with the real port when 0 was asked.
        port: the bound port.
        cert_path: the certificate a client must trust when serving TLS, else None. The file
            lives only as long as the server runs.
    """

    url: str = ""
    port: int = 0
    cert_path: Path | None = None


class _Server(uvicorn.Server):
    """A uvicorn server that reports when it listens and leaves signal re-raising to us.

    uvicorn re-raises a captured SIGINT/SIGTERM as soon as it has shut down, and the default
    SIGTERM action ends the process on the spot, before `serve_appliance` could remove its
    temporary directory. So this server only records the signals; `serve_appliance` re-raises
    them after its cleanup, and an embedding program still sees them.
    """

    def __init__(self, config: uvicorn.Config, started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = started
        self.signals: list[int] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signal handlers can be installed from the main thread only, as in uvicorn.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so a busy port raises OSError in the caller's code.

    uvicorn would log and call ``sys.exit`` instead, which is wrong for a server embedded in
    another program.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _load_config(app: Starlette, certfile: str | None, keyfile: str | None) -> uvicorn.Config:
    """Build and load the uvicorn config, then delete the key file, now held in memory (P6).

    Synchronous on purpose: it runs once at start and takes milliseconds.
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    config.load()
    if keyfile is not None:
        Path(keyfile).unlink()
    return config


async def serve_appliance(
    host: str,
    port: int,
    *,
    tls: bool,
    faults: Faults,
    ready: anyio.Event | None = None,
    address: ApplianceAddress | None = None,
) -> None:
    """Serve the simulator until cancelled (or, when run in the main thread, SIGINT/SIGTERM).

    Runs uvicorn inside the current event loop, so a caller can embed it next to a collector
    and a gateway. With `tls`, a fresh self-signed certificate is generated into a temporary
    directory that is removed when the server stops.

    Args:
        host: address to listen on.
        port: port to listen on; 0 picks a free one (see `address`).
        tls: serve HTTPS with a generated self-signed certificate.
        faults: the faults to apply, shared with the caller.
        ready: set once the server accepts connections.
        address: filled in with the URL, real port and certificate path before `ready` is set.

    Raises:
        OSError: the address cannot be bound.
    """
    address = address if address is not None else ApplianceAddress()
    faults.validate()
    with contextlib.ExitStack() as stack:
        certfile = keyfile = None
        if tls:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qrng-dd-appliance-"))
            cert_path, key_path = generate_self_signed(Path(tmp))
            certfile, keyfile = str(cert_path), str(key_path)
            address.cert_path = cert_path
        sock = stack.enter_context(_bind(host, port))
        address.port = sock.getsockname()[1]
        shown_host = f"[{host}]" if ":" in host else host
        address.url = f"{'https' if tls else 'http'}://{shown_host}:{address.port}"
        config = _load_config(create_app(faults), certfile, keyfile)

        def started() -> None:
            log.warning(
                "appliance SIMULATOR (not quantum: bytes from os.urandom) listening on %s%s",
                address.url,
                f"; trust {address.cert_path}" if address.cert_path else "",
            )
            if ready is not None:
                ready.set()

        server = _Server(config, started)
        try:
            await server.serve(sockets=[sock])
        except anyio.get_cancelled_exc_class():
            # Cancelled mid-run: close the listener and connections before unwinding, or
            # the event loop keeps serving a socket that its owner believes closed.
            server.should_exit = True
            if server.started:
                with anyio.CancelScope(shield=True):
                    await server.shutdown(sockets=[sock])
            raise
    # Cleaned up; now let a SIGINT or SIGTERM that stopped us act as it would have.
    for sig in reversed(server.signals):
        signal.raise_signal(sig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``qrng-dd appliance`` options (DESIGN §9) to `parser`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8443, help="port to listen on")
    parser.add_argument(
        "--tls", action="store_true", help="serve HTTPS with a generated self-signed certificate"
    )
    parser.add_argument(
        "--error-rate", type=float, default=0.0, metavar="F", help="fraction answered 500"
    )
    parser.add_argument(
        "--latency-ms", type=int, default=0, metavar="N", help="delay added to each request"
    )
    parser.add_argument("--stuck", action="store_true", help="emit one repeated byte value")
    parser.add_argument(
        "--bias", type=float, default=0.0, metavar="F", help="each bit is 1 with P = 0.5 + F/2"
    )
    parser.add_argument(
        "--max-bitrate", type=int, default=0, metavar="BPS", help="bit-rate cap, 0 = none"
    )
    parser.add_argument(
        "--repeat",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of draws that replay earlier output (last 1 MiB)",
    )
    parser.add_argument(
        "--drift", type=float, default=0.0, metavar="F", help="bias gained per MiB served"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``qrng-dd appliance`` with parsed `args` until interrupted.

    Returns:
        0 after a clean stop, 1 if the port cannot be bound, 2 for a bad option.
    """
    faults = Faults(
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        stuck=args.stuck,
        bias=args.bias,
        max_bitrate=args.max_bitrate,
        repeat=args.repeat,
        drift=args.drift,
    )
    try:
        faults.validate()
    except ValueError as err:
        option, _, rest = str(err).partition(" ")
        print(f"qrng-dd appliance: --{option.replace('_', '-')} {rest}", file=sys.stderr)
        return 2

    async def main() -> None:
        await serve_appliance(args.host, args.port, tls=args.tls, faults=faults)

    try:
        anyio.run(main)
    except OSError as err:
        print(
            f"qrng-dd appliance: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0
