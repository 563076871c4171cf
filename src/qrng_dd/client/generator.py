"""numpy: a ``Generator`` whose bits come from a gateway, and seeds for reproducible runs.

:func:`quantum_generator` wraps an :class:`~qrng_dd.client.buffer.EntropyBuffer` as a numpy
bit generator through randomgen's ``UserBitGenerator`` (install ``qrng-data-diode[numpy]``),
so every distribution numpy has (``random``, ``normal``, ``integers``, ``choice`` …) runs on
quantum bits. Bits are pulled 8 KiB at a time into a block of 64-bit words and handed out one
word per call. randomgen ignores an exception raised inside a bit generator's callback (the
draw would go on with zeros), so a failed refill is remembered instead, and every call on the
returned :class:`QuantumGenerator` raises it as soon as the call returns: values drawn while
the gateway failed are never given back.

:func:`seed_sequence` is for the other need, a simulation that must be replayable: one quantum
draw of 128 or more bits seeds numpy's ``SeedSequence``; publish its ``entropy`` and the run can
be repeated exactly, with a seed no one could have chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import numpy as np

from qrng_dd.client.buffer import EntropyBuffer
from qrng_dd.client.protocol import ClientError
from qrng_dd.client.sync import Client

#: Bytes pulled from the buffer per refill of the word block (1,024 words): small beside the
#: buffer, so the buffer refills in the background while the block is used.
BLOCK_BYTES: Final = 8192


class _QuantumWords:
    """64-bit words from a buffer, one per call; a failure is kept for the caller to raise."""

    def __init__(self, buffer: EntropyBuffer) -> None:
        self.buffer = buffer
        self.block = max(8, min(BLOCK_BYTES, buffer.size) // 8 * 8)
        self.error: ClientError | None = None
        self._words: Iterator[int] = iter(())

    def next_raw(self, _state: object) -> int:
        try:
            return next(self._words)
        except StopIteration:
            pass
        try:
            block = self.buffer.take(self.block)
        except ClientError as err:
            self.error = self.error or err
            return 0
        self._words = iter(np.frombuffer(block, dtype=np.uint64).tolist())
        return next(self._words)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class QuantumGenerator(np.random.Generator):
    """A ``numpy.random.Generator`` on quantum bits; a gateway failure raises from the call
    that hit it (see the module docstring)."""

    def __init__(self, buffer: EntropyBuffer) -> None:
        try:
            from randomgen import UserBitGenerator
        except ImportError as err:
            msg = "quantum_generator needs randomgen: pip install 'qrng-data-diode[numpy]'"
            raise ImportError(msg) from err
        words = _QuantumWords(buffer)
        super().__init__(UserBitGenerator(words.next_raw, 64))
        self._words = words

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name.startswith("_") or not callable(value):
            return value
        words: _QuantumWords = super().__getattribute__("_words")
        return _checked(value, words)


def _checked(method: Callable[..., Any], words: _QuantumWords) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        words.raise_if_failed()
        return result

    return call


def quantum_generator(source: EntropyBuffer | Client | None = None) -> QuantumGenerator:
    """A numpy ``Generator`` drawing from ``source`` (a buffer, a client, or by default a
    client configured from the environment)."""
    if source is None:
        source = Client()
    buffer = source if isinstance(source, EntropyBuffer) else EntropyBuffer(source)
    return QuantumGenerator(buffer)


def seed_sequence(client: Client, bits: int = 128) -> np.random.SeedSequence:
    """A ``SeedSequence`` from ``bits`` quantum bits (at least 128, as numpy recommends)."""
    if bits < 128:
        msg = f"a seed needs at least 128 bits, got {bits}"
        raise ValueError(msg)
    entropy = int.from_bytes(client.random_bytes((bits + 7) // 8)) >> (-bits % 8)
    return np.random.SeedSequence(entropy)
