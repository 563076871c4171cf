"""Combining the batches of several healthy sources into one output. Pure.

``xor``: the output is the bytewise XOR of the batches. If any one source is uniform and
independent of the others, so is the XOR: one good appliance is enough, however bad the rest.
The output has the length of the shortest batch.

``hkdf``: each 32-byte output block is HKDF-SHA256 of the matching 32-byte block of every
source (concatenated as input keying material, block index in ``info``). HKDF's extract step is
a randomness extractor; since the input block carries at least as much entropy as any one of
its parts, and 32 bytes come out for every 32 bytes of each source, the output's entropy rate
is never lower than that of the best source (up to HKDF's 256-bit output per block). It costs
one HKDF per 32 bytes, so it is slower than ``xor``: ``make bench`` measures both.

With one healthy source both modes pass its bytes through unchanged (for ``hkdf`` conditioned
per block): mixing never pretends one source is several. The caller decides whether one is
enough (``QRNG_MIN_SOURCES``) and reports how many contributed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Mixing = Literal["xor", "hkdf"]
BLOCK = 32
_INFO = b"qrng-dd/1 mix "


def mix(batches: Sequence[bytes], mode: Mixing) -> bytes:
    """Mix equal-purpose batches from distinct sources; ``b""`` for none.

    Raises:
        ValueError: unknown mode.
    """
    if not batches:
        return b""
    n = min(len(b) for b in batches)
    if mode == "xor":
        if len(batches) == 1:
            return batches[0][:n]
        # Pairwise into one output array: GB/s, where ``np.bitwise_xor.reduce(axis=0)`` over a
        # stacked copy ran at ~250 MB/s (make bench, collector cpu).
        arrays = [np.frombuffer(b, dtype=np.uint8, count=n) for b in batches]
        acc = np.bitwise_xor(arrays[0], arrays[1])
        for more in arrays[2:]:
            np.bitwise_xor(acc, more, out=acc)
        mixed: bytes = acc.tobytes()
        return mixed
    if mode == "hkdf":
        n -= n % BLOCK
        out = bytearray()
        for start in range(0, n, BLOCK):
            ikm = b"".join(b[start : start + BLOCK] for b in batches)
            out += HKDF(
                algorithm=hashes.SHA256(),
                length=BLOCK,
                salt=None,
                info=_INFO + start.to_bytes(8, "big"),
            ).derive(ikm)
        return bytes(out)
    msg = f"unknown mixing mode {mode!r}"
    raise ValueError(msg)
