"""A Quantis-compatible appliance simulator with fault injection (DESIGN §9).

The simulator speaks the subset of the ID Quantique Quantis appliance REST API v2.0 that a
collector uses, so the whole pipeline can be exercised on a laptop, in CI and by
``qrng-dd demo``; the collector (DESIGN §6) fetches from it exactly as from a real appliance.

**This is not a quantum device.** Every byte comes from the operating system's CSPRNG
(``os.urandom``); ``systeminfo`` and ``firmwareinfo`` say so in plain words, so nobody mistakes a
demo for a deployment.

Modules, each with its own theory of operation:

- `qrng_dd.simulator.faults`: the `Faults` it can inject (errors, latency, stuck, bias, bit-rate
  cap, replays, drift), their validation, and the bytes a faulty source emits. Pure but for
  ``os.urandom``.
- `qrng_dd.simulator.app`: the Starlette app (`create_app`): the API, the source state behind
  ``repeat`` and ``drift``, and the simulator-only ``/sim/faults`` and ``/sim/stats``.
- `qrng_dd.simulator.server`: `serve_appliance` (uvicorn in the caller's loop, optional TLS with a
  generated self-signed certificate) and the ``qrng-dd appliance`` command.

The CLI imports `qrng_dd.simulator.server` only when ``qrng-dd appliance`` is chosen, so no other
command loads the simulator.
"""

from __future__ import annotations

from qrng_dd.simulator.app import create_app
from qrng_dd.simulator.faults import BitrateCap, Faults, effective_bias, generate_bytes
from qrng_dd.simulator.server import ApplianceAddress, generate_self_signed, serve_appliance

__all__ = [
    "ApplianceAddress",
    "BitrateCap",
    "Faults",
    "create_app",
    "effective_bias",
    "generate_bytes",
    "generate_self_signed",
    "serve_appliance",
]
