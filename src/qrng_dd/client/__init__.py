"""The client side of a qrng-dd gateway: quantum randomness inside a program.

- :class:`Client` / :class:`AsyncClient`: every route, big requests split within the gateway's
  limits, ``Retry-After`` honoured up to a bounded wait, one exception family.
- :class:`EntropyBuffer`: bytes fetched ahead in the background, each given once.
- :class:`QuantumRandom`: a drop-in ``random.Random``.
- :func:`quantum_generator`, :func:`seed_sequence`: numpy (``qrng-data-diode[numpy]``).

Configured by arguments or ``QRNG_GATEWAY_URL`` / ``QRNG_GATEWAY_API_KEY``. A failure raises a
:class:`ClientError`; nothing here ever falls back to a pseudo-random source. See docs/CLIENT.md.
"""

from qrng_dd.client.aio import AsyncClient
from qrng_dd.client.buffer import EntropyBuffer
from qrng_dd.client.generator import QuantumGenerator, quantum_generator, seed_sequence
from qrng_dd.client.protocol import (
    AuthenticationError,
    ClientError,
    EntropyUnavailableError,
    GatewayError,
    GatewayUnreachableError,
    Limits,
    RateLimitedError,
    RequestRefusedError,
)
from qrng_dd.client.stdlib import QuantumRandom
from qrng_dd.client.sync import Client

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ClientError",
    "EntropyBuffer",
    "EntropyUnavailableError",
    "GatewayError",
    "GatewayUnreachableError",
    "Limits",
    "QuantumGenerator",
    "QuantumRandom",
    "RateLimitedError",
    "RequestRefusedError",
    "quantum_generator",
    "seed_sequence",
]
