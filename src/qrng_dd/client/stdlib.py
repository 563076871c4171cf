"""``QuantumRandom``: the standard library's ``random.Random`` with gateway bytes under it.

Only the three primitives are replaced (``random``, ``getrandbits``, ``randbytes``, drawn
from an :class:`~qrng_dd.client.buffer.EntropyBuffer` exactly as ``random.SystemRandom``
draws from ``os.urandom``); everything else (``randint``, ``choice``, ``shuffle``, ``sample``,
``gauss`` …) is the standard library's own code on top of them, with its unbiased
``_randbelow``. A quantum stream cannot be replayed, so ``seed``, ``getstate`` and
``setstate`` refuse instead of pretending.
"""

from __future__ import annotations

import random
from typing import Any, NoReturn

from qrng_dd.client.buffer import EntropyBuffer
from qrng_dd.client.sync import Client

_RECIP_BPF = 2.0**-53


class QuantumRandom(random.Random):
    """A ``random.Random`` whose every bit comes from a qrng-dd gateway.

    Args:
        source: an :class:`EntropyBuffer` to draw from, or a :class:`Client` (a buffer of
            the default size is made for it); default: a client from ``QRNG_GATEWAY_URL`` and
            ``QRNG_GATEWAY_API_KEY``.

    Raises:
        ClientError: from any draw the gateway cannot serve; never a pseudo-random fallback.
    """

    def __init__(self, source: EntropyBuffer | Client | None = None) -> None:
        # random.Random.__init__ would call self.seed(): skip it, there is nothing to seed.
        if source is None:
            source = Client()
        self.buffer = source if isinstance(source, EntropyBuffer) else EntropyBuffer(source)
        self.gauss_next = None

    def random(self) -> float:
        """A float in [0, 1) from 53 quantum bits."""
        return (int.from_bytes(self.buffer.take(7)) >> 3) * _RECIP_BPF

    def getrandbits(self, k: int) -> int:
        """An int of ``k`` quantum bits."""
        if k < 0:
            msg = "number of bits must be non-negative"
            raise ValueError(msg)
        whole = (k + 7) // 8
        return int.from_bytes(self.buffer.take(whole)) >> (whole * 8 - k)

    def randbytes(self, n: int) -> bytes:
        """``n`` quantum bytes, as the gateway served them."""
        return self.buffer.take(n)

    def seed(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise _no_state("seed")

    def getstate(self) -> NoReturn:
        raise _no_state("getstate")

    def setstate(self, state: Any) -> NoReturn:
        raise _no_state("setstate")


def _no_state(method: str) -> NotImplementedError:
    return NotImplementedError(
        f"QuantumRandom.{method}(): a quantum stream has no state and cannot be replayed; "
        "for a reproducible run, draw a seed once (qrng_dd.client.seed_sequence) and seed a "
        "pseudo-random generator with it"
    )
