"""The simulator's faults: what they are, how they are checked, and the bytes they produce.

Theory of operation
-------------------
Faults (`Faults`) make the simulator misbehave the way real appliances and the networks in
front of them do, so the collector's backoff, health tests (P5) and honest failure (P4) can be
tested:

- ``error_rate``: that fraction of API requests answers 500 with an HTML page, as a reverse proxy
  in front of a dead appliance would (the collector must not expect JSON on errors).
- ``latency_ms``: added to every API request before it is answered.
- ``stuck``: the source emits one repeated byte value (``0xA5``, deliberately balanced in ones and
  zeros, so only the repetition-count test can catch it, not a bit counter).
- ``bias``: each output bit is 1 with probability ``0.5 + bias / 2``.
- ``max_bitrate``: a token bucket (`BitrateCap`) caps the source at that many bits per second,
  like a 4 Mbit/s or 16 Mbit/s Quantis. A request larger than the bucket holds is not refused:
  it waits until the device would have produced its bits, which is what a real appliance does.
- ``repeat``: that fraction of draws replays old output, as a source whose buffer serves stale
  data: the draw is a contiguous copy of bytes already served, from a uniformly random position
  in the last 1 MiB of output. Every bit looks fair, so only a duplicate check can catch it. A
  draw larger than the history held so far is always fresh.
- ``drift``: the source degrades as it works: the effective bias is
  ``min(1, bias + drift * MiB served since drift was set)``. It is counted in bytes served, not
  wall time, so a test reproduces it exactly; setting ``drift`` again restarts the count.

Every value is checked by `check_fault`, both at start (`Faults.validate`) and for each field a
control request sets, so a bad value is refused before it can act. This module keeps no state
of the source: the app (`qrng_dd.simulator.app`) holds the history and the counters.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from qrng_dd.ratelimit import TokenBucket

__all__ = [
    "MAX_LATENCY_MS",
    "BitrateCap",
    "Faults",
    "check_fault",
    "effective_bias",
    "generate_bytes",
]

# A sleep longer than an hour is a typo, and huge values overflow the event loop's timer.
MAX_LATENCY_MS: Final = 3_600_000
# drift is bias gained per MiB served.
_MIB: Final = 1024 * 1024
# Balanced (four ones, four zeros): a stuck source must be caught by the repetition-count test.
_STUCK_BYTE: Final = 0xA5
# A real device buffers only a little: a burst of 100 ms keeps the cap visible to a collector
# that idles between fetches, where a one-second bucket would hide it.
_BURST_SECONDS: Final = 0.1
# The simulator is one device: its cap is one bucket under one name.
_DEVICE: Final = "device"
# Bias masks are built this many output bytes at a time, so a 10 MiB request needs 16 MiB of
# scratch (two bytes per bit), not 160 MiB.
_BIAS_CHUNK: Final = 1024 * 1024


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
            check_fault(name, value)


def check_fault(name: str, value: object) -> Any:
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


class BitrateCap:
    """The ``max_bitrate`` fault: a cap that makes requests wait, never fail.

    The device is slow, not broken. It is the project's one token bucket
    (`qrng_dd.ratelimit.TokenBucket`), spent with ``reserve``: it always takes the bits, running
    into debt, and returns how long the caller must wait until the device would have produced
    them. Concurrent requests therefore queue in arrival order, each waiting behind the debt of
    those before it, as reads from one serial device do. The bucket holds 100 ms of bits. The
    rate is passed on every call, so a fault change takes effect at once: time since the last
    call refills at the new rate, and a cap switched on starts full, as a device that has been
    idle. The clock is injectable so the arithmetic is tested without sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._bucket: TokenBucket | None = None

    def reserve(self, bits: int, rate: int) -> float:
        """Take `bits` from the bucket and return the seconds to wait before answering.

        Args:
            bits: how many bits the request consumes.
            rate: the current cap in bits per second; 0 or less means no cap.

        Returns:
            0.0 when the bits were available, else the time until the debt is paid back.
        """
        now = self._clock()
        if rate <= 0:
            self._bucket = None
            return 0.0
        if self._bucket is None:
            self._bucket = TokenBucket(rate, rate * _BURST_SECONDS)
        else:
            self._bucket.rate, self._bucket.burst = rate, rate * _BURST_SECONDS
        return self._bucket.reserve(_DEVICE, bits, now)


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
