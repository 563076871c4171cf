"""More shapes from pool bytes: choices, samples, shuffles, strings, gaussians, decimals, dice.

Pure, like :mod:`qrng_dd.gateway.derive`, and on the same ``read(n) -> bytes``. Every shape is
uniform by construction; nothing reduces a random number modulo a size it does not divide:

- **An index below n** comes from one byte when ``n <= 256`` (kept only below the largest
  multiple of ``n`` that fits in a byte, then reduced), else from
  :func:`~qrng_dd.gateway.derive.integers` (64-bit rejection). A 62-letter alphabet keeps
  bytes below 248 and wastes 3 % of them.
- **Samples without replacement** are a partial Fisher-Yates shuffle of the range, kept sparse
  (a dict of the positions swapped so far), so picking 10 of 2^31 values costs 10 draws and
  no 2^31-entry array. A full shuffle is the same walk to the end.
- **Gaussians** are the inverse of the normal CDF at the midpoint uniform ``(2k + 1) / 2^53``
  of a 52-bit ``k``: one 8-byte draw per value, exact in a double, never 0 or 1 and symmetric
  about 1/2, so every value is finite (|z| < 8.3) and the distribution symmetric. The tails
  beyond that are cut, as with any method on 53-bit doubles; ``statistics.NormalDist`` gives
  the inverse to full double precision (Wichura's AS241).
- **Decimal fractions** with ``places`` digits are uniform integers in ``[0, 10^places)``
  divided by ``10^places``: each of the 10^places values equally likely, as RANDOM.ORG
  promises.

:func:`index_reads` and :func:`sample_reads` say how indices and samples read the pool, for
:func:`~qrng_dd.gateway.derive.read_bound`: the most bytes a request takes, but for a chance
below 2^-38 (strings, choices and dice are indices; a shuffle is a sample).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import NormalDist
from typing import Final

from qrng_dd.gateway.derive import Reader, Reads, integer_reads, integers

_STANDARD: Final = NormalDist()
#: Dice notation: ``NdS``, optionally ``+K`` or ``-K`` (``3d6``, ``1d20+5``, ``d100``).
DICE: Final = re.compile(r"([0-9]{0,3})[dD]([0-9]{1,7})(?:([+-])([0-9]{1,9}))?")


def indices(read: Reader, count: int, size: int) -> list[int]:
    """``count`` integers uniform in ``[0, size)``.

    Raises:
        ValueError: ``size`` is not positive (a caller bug).
    """
    if size < 1:
        raise ValueError("size must be positive")
    if size > 256:
        return integers(read, count, 0, size - 1)
    limit = 256 - 256 % size
    kept: list[int] = []
    while len(kept) < count:
        # Ask for what is missing plus the expected waste, so one read usually suffices.
        need = count - len(kept)
        batch = read(need + -(-need * (256 - limit) // limit))
        kept += [b % size for b in batch if b < limit]
    del kept[count:]
    return kept


#: The chance that :func:`indices` rejects a byte, by ``size`` (1..256; index 0 unused).
_REJECT_BYTE: Final = (0.0, *((256 % size) / 256 for size in range(1, 257)))


def index_reads(count: int, size: int) -> Reads:
    """What :func:`indices` reads: 64-bit draws above 256, else bytes, each batch asking
    for what is missing plus its expected waste. The batch that completes the count asked
    for at most ``need * (256 - limit) / limit`` (rounded up) bytes past the last one it
    needed, ``need <= count``: that is the read-ahead."""
    if size > 256:
        return integer_reads(count, 0, size - 1)
    limit = 256 - 256 % size
    return Reads(1, count, _REJECT_BYTE[size], -(-count * (256 - limit) // limit))


def sample_reads(size: int, count: int) -> tuple[Reads, ...]:
    """What :func:`sample` reads: one :func:`indices` call per pick, from ``size`` values
    left down to ``size - count + 1``.

    A pick from more than 256 values reads 64-bit draws, rejected less often than
    ``(size - 1) / 2^64`` (``2^64 mod n < n``). A pick from ``n <= 256`` reads bytes: one
    when ``n`` divides 256, else pairs (one needed plus the expected waste, rounded up),
    until a pair holds an accepted byte: a 2-byte draw, rejected when both bytes are.
    """
    big = max(0, min(count, size - 256))
    parts = [Reads(8, big, min(size - 1, 2**63) / 2**64)] if big else []
    low, high = size - count + 1, size - big  # the picks from at most 256 values
    if low <= high:
        whole = high.bit_length() - (low - 1).bit_length()  # powers of two: divide 256
        if whole:
            parts.append(Reads(1, whole))
        if pairs := high - low + 1 - whole:
            parts.append(Reads(2, pairs, max(_REJECT_BYTE[low : high + 1]) ** 2))
    return tuple(parts)


def choices(read: Reader, population: Sequence[str], count: int) -> list[str]:
    """``count`` items of ``population``, each uniform, with replacement."""
    return [population[i] for i in indices(read, count, len(population))]


def strings(read: Reader, count: int, length: int, alphabet: str) -> list[str]:
    """``count`` strings of ``length`` characters, each uniform over ``alphabet``."""
    chars = choices(read, alphabet, count * length)
    return ["".join(chars[i : i + length]) for i in range(0, count * length, length)]


def sample(read: Reader, size: int, count: int) -> list[int]:
    """``count`` distinct integers of ``[0, size)`` in random order (every ordered
    selection equally likely); ``count == size`` is a uniform permutation.

    Raises:
        ValueError: ``count`` is above ``size`` (a caller bug).
    """
    if not 0 <= count <= size:
        raise ValueError("cannot pick more distinct values than there are")
    moved: dict[int, int] = {}
    picked: list[int] = []
    for i in range(count):
        j = i + indices(read, 1, size - i)[0]  # position i swaps with one of [i, size)
        picked.append(moved.get(j, j))
        moved[j] = moved.get(i, i)
    return picked


def shuffle(read: Reader, items: Sequence[str]) -> list[str]:
    """``items`` in a uniformly random order."""
    return [items[i] for i in sample(read, len(items), len(items))]


def gaussians(read: Reader, count: int, mean: float = 0.0, stddev: float = 1.0) -> list[float]:
    """``count`` normal values: ``mean + stddev * z``, z by the inverse CDF (see above)."""
    raw = read(8 * count)
    inv = _STANDARD.inv_cdf
    out: list[float] = []
    for i in range(0, 8 * count, 8):
        k = int.from_bytes(raw[i : i + 8], "little") >> 12
        out.append(mean + stddev * inv((2 * k + 1) * 2.0**-53))
    return out


def decimal_fractions(read: Reader, count: int, places: int) -> list[float]:
    """``count`` values uniform over ``{0, 10^-places, ..., 1 - 10^-places}``, rounded to
    ``places`` digits."""
    scale = 10**places
    return [round(k / scale, places) for k in integers(read, count, 0, scale - 1)]


def parse_dice(notation: str) -> tuple[int, int, int] | None:
    """``(dice, sides, modifier)`` of dice notation, or None when it is not that."""
    match = DICE.fullmatch(notation.strip())
    if match is None:
        return None
    dice = int(match[1] or "1")
    sides = int(match[2])
    modifier = int(match[4] or "0") * (-1 if match[3] == "-" else 1)
    return dice, sides, modifier


def dice(read: Reader, count: int, sides: int) -> list[int]:
    """``count`` rolls of a fair die with ``sides`` faces (1..sides)."""
    return [1 + i for i in indices(read, count, sides)]
