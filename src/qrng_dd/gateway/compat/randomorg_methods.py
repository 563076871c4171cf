"""RANDOM.ORG's JSON-RPC 4 basic methods as pure functions over a pool ``read``.

Each method reads its parameters strictly, against the limits of RANDOM.ORG's Release 4
documentation (https://api.random.org/json-rpc/4/basic, as its official client libraries
quote them), and returns a :class:`Draw`: the fewest pool bytes the answer needs (what the
key is charged), the most it may read (rejection sampling draws again what it refuses; a
bound from :func:`..derive.read_bound`) and the function that turns pool bytes into the
method's ``data``. Nothing is drawn before every parameter has passed, so a bad request
never costs entropy.

The values come from the same shapes as our own routes (:mod:`..shapes`, :mod:`..derive`),
uniform by construction: 64-bit rejection sampling for integers, a sparse Fisher-Yates walk
for ``replacement: false``, the inverse normal CDF for gaussians (RANDOM.ORG uses Box-Muller;
both give normal values). A refusal is an :class:`RpcError` carrying RANDOM.ORG's code; every
message names the parameter. Pure: no I/O framework.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from qrng_dd.gateway import derive, shapes
from qrng_dd.gateway.derive import Reader, Reads, integer_reads, read_bound

T = TypeVar("T")

#: The documented limits (Release 4).
MAX_N: Final = 10_000  # values per request: n, and the sequences' lengths in all
MAX_SEQUENCES: Final = 1_000
MAX_UUIDS: Final = 1_000
MAX_BLOBS: Final = 100
MAX_BLOB_BITS: Final = 1_048_576  # one blob, and all blobs together (128 KiB)
BOUND: Final = 1_000_000_000  # |min|, |max|
MAX_PLACES: Final = 14  # decimalPlaces
MIN_DIGITS, MAX_DIGITS = 2, 14  # significantDigits
GAUSSIAN_BOUND: Final = 1_000_000  # |mean|, |standardDeviation|
MAX_STRING_LENGTH: Final = 32
MAX_CHARACTERS: Final = 128
BASES: Final = (2, 8, 10, 16)
BLOB_FORMATS: Final = ("base64", "hex")
_DIGITS: Final = {2: "b", 8: "o", 16: "x"}
#: ``shapes.sample`` draws indices as signed 64-bit integers: spaces up to 2^63 values.
_SAMPLE_SPACE: Final = 2**63
_REQUIRED: Final[Any] = object()


class RpcError(Exception):
    """A JSON-RPC error object: RANDOM.ORG's ``code``, a ``message`` naming the parameter,
    and ``data`` (the values a client needs to build its own message, as RANDOM.ORG sends)."""

    def __init__(
        self, code: int, message: str, data: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        #: HTTP header fields for the reply (``Retry-After``); the status stays 200.
        self.headers = dict(headers or {})


def invalid_params(message: str, data: Any = None) -> RpcError:
    """-32602: a parameter missing or unknown, as RANDOM.ORG answers a misspelt name."""
    return RpcError(-32602, f"Invalid params: {message}", data)


def malformed(name: str, why: str) -> RpcError:
    """200: the parameter has the wrong JSON type or shape."""
    return RpcError(200, f"Parameter '{name}' is malformed: {why}", [name])


def out_of_range(name: str, allowed: str, got: str) -> RpcError:
    """202: the parameter has the right type but a value outside what is allowed."""
    message = f"Parameter '{name}' is out of range; allowable values are {allowed}, got {got}"
    return RpcError(202, message, [name, allowed])


_KINDS: Final = (
    (bool, "a boolean"), (str, "a string"), (list, "an array"), (dict, "an object"),
    (float, "a number with a fraction"), (int, "a number"),
)  # fmt: skip


def kind(value: Any) -> str:
    """The JSON type of ``value``, for a message."""
    return next((name for cls, name in _KINDS if isinstance(value, cls)), "null")


def _integer(name: str, value: Any, low: int, high: int) -> int:
    """An integer in ``[low, high]``; an integral JSON number (``1e3``) counts as one."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(name, f"an integer is expected, got {kind(value)}")
    if not low <= value <= high:
        raise out_of_range(name, f"[{low}, {high}]", str(value)[:40])
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise malformed(name, f"true or false is expected, got {kind(value)}")
    return value


def _base(name: str, value: Any) -> int:
    base = _integer(name, value, 2, 16)
    if base not in BASES:
        raise out_of_range(name, "2, 8, 10 or 16", str(base))
    return base


class Params:
    """One request's named parameters: each read once, with its JSON type checked; a name
    no method reads is refused afterwards (:meth:`done`), so a misspelt optional parameter
    is never silently ignored. ``apiKey`` is the dispatcher's."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.read: set[str] = {"apiKey"}

    def get(self, name: str, default: Any = _REQUIRED) -> Any:
        self.read.add(name)
        if name in self.raw:
            return self.raw[name]
        if default is _REQUIRED:
            raise invalid_params(f"'{name}' is required", [name])
        return default

    def integer(self, name: str, low: int, high: int) -> int:
        return _integer(name, self.get(name), low, high)

    def boolean(self, name: str, default: bool) -> bool:
        return _boolean(name, self.get(name, default))

    def number(self, name: str, bound: int) -> float:
        """A finite JSON number in ``[-bound, bound]``."""
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise malformed(name, f"a number is expected, got {kind(value)}")
        if not -bound <= value <= bound:  # also refuses 1e999, which JSON reads as infinity
            raise out_of_range(name, f"[{-bound}, {bound}]", str(value)[:40])
        return float(value)

    def each(
        self, name: str, n: int, one: Callable[[str, Any], T], default: Any = _REQUIRED
    ) -> list[T]:
        """A value per sequence: an array of ``n`` values (multiform) or one for all."""
        value = self.get(name, default)
        if not isinstance(value, list):
            return [one(name, value)] * n
        if len(value) != n:
            raise malformed(name, f"an array must hold n = {n} values, got {len(value)}")
        return [one(name, item) for item in value]

    def done(self) -> None:
        """Refuse a parameter the method does not take, and a ``pregeneratedRandomization``
        other than null: every pool byte is served once, so there is no historical
        randomness to replay (rdoclient always sends null)."""
        if self.get("pregeneratedRandomization", None) is not None:
            raise invalid_params(
                "'pregeneratedRandomization' must be null: this gateway serves each byte once "
                "and keeps no historical randomness",
                ["pregeneratedRandomization"],
            )
        for name in self.raw:
            if name not in self.read:
                raise invalid_params(f"unknown parameter {name[:40]!a}", [name[:40]])


@dataclass(frozen=True, slots=True)
class Draw:
    """What a checked request will draw, by ``make``: ``need`` bytes, what the key is charged;
    ``reads``, the most ``make`` reads when rejection sampling may read more (a bound
    exceeded with a chance below 2^-38; 0: exactly ``need``); and ``blame``, the count
    parameter named if :attr:`most` is more than the pool can ever hold."""

    need: int
    make: Callable[[Reader], Any]
    blame: str = "n"
    reads: int = 0

    @property
    def most(self) -> int:
        """The most bytes ``make`` may read: what is checked against the pool's capacity."""
        return max(self.need, self.reads)


def _ordered(low: int, high: int) -> None:
    if low > high:
        message = f"Parameter 'min' ({low}) must be less than or equal to parameter 'max' ({high})"
        raise RpcError(300, message, ["min", "max"])


def _enough(name: str, count: int, space: int) -> None:
    """``count`` distinct values must exist to pick them without replacement."""
    if count > space:
        message = f"Parameter '{name}' asks for {count} distinct values, but only {space} exist"
        raise RpcError(301, message, [name, count, space])


def _sample_need(space: int, count: int) -> int:
    """Bytes a sparse Fisher-Yates walk reads at least: 8 per pick from more than 256 values
    left, else one (:func:`shapes.indices`)."""
    big = max(0, min(count, space - 256))
    return 8 * big + (count - big)


def _pick_reads(count: int, low: int, high: int, replacement: bool) -> tuple[Reads, ...]:
    """What :func:`_pick` reads."""
    if replacement:
        return (integer_reads(count, low, high),)
    return shapes.sample_reads(high - low + 1, count)


def _pick(read: Reader, count: int, low: int, high: int, replacement: bool) -> list[int]:
    if replacement:
        return derive.integers(read, count, low, high)
    return [low + i for i in shapes.sample(read, high - low + 1, count)]


def _in_base(value: int, base: int) -> int | str:
    """Base 10 as a JSON integer; 2, 8 and 16 as strings (JSON numbers are decimal only),
    lowercase, unpadded, with a leading '-' for negatives."""
    return value if base == 10 else format(value, _DIGITS[base])


# -- the methods ------------------------------------------------------------------------------


def generate_integers(p: Params) -> Draw:
    n = p.integer("n", 1, MAX_N)
    low, high = p.integer("min", -BOUND, BOUND), p.integer("max", -BOUND, BOUND)
    replacement = p.boolean("replacement", True)
    base = _base("base", p.get("base", 10))
    _ordered(low, high)
    need = 8 * n
    if not replacement:
        _enough("n", n, high - low + 1)
        need = _sample_need(high - low + 1, n)
    return Draw(
        need,
        lambda read: [_in_base(v, base) for v in _pick(read, n, low, high, replacement)],
        reads=read_bound(*_pick_reads(n, low, high, replacement)),
    )


def generate_integer_sequences(p: Params) -> Draw:
    """Uniform (every parameter one value) or multiform (``length``, ``min``, ``max``,
    ``replacement`` and ``base`` each an array of ``n`` values, or one value for all)."""
    n = p.integer("n", 1, MAX_SEQUENCES)
    lengths = p.each("length", n, lambda name, v: _integer(name, v, 1, MAX_N))
    lows = p.each("min", n, lambda name, v: _integer(name, v, -BOUND, BOUND))
    highs = p.each("max", n, lambda name, v: _integer(name, v, -BOUND, BOUND))
    replacements = p.each("replacement", n, _boolean, True)
    bases = p.each("base", n, _base, 10)
    total = sum(lengths)
    if total > MAX_N:
        raise out_of_range("length", f"[1, {MAX_N}] values in all", f"{total} in all")
    need = 0
    reads: list[Reads] = []
    for i in range(n):
        _ordered(lows[i], highs[i])
        need += 8 * lengths[i]
        if not replacements[i]:
            _enough("length", lengths[i], highs[i] - lows[i] + 1)
            need += _sample_need(highs[i] - lows[i] + 1, lengths[i]) - 8 * lengths[i]
        reads += _pick_reads(lengths[i], lows[i], highs[i], replacements[i])

    def make(read: Reader) -> list[list[int | str]]:
        picks = [_pick(read, lengths[i], lows[i], highs[i], replacements[i]) for i in range(n)]
        return [
            [_in_base(v, base) for v in values] for values, base in zip(picks, bases, strict=True)
        ]

    return Draw(need, make, "length", read_bound(*reads))


def generate_decimal_fractions(p: Params) -> Draw:
    """Uniform over ``{0, 10^-d, ..., 1 - 10^-d}``: each of the 10^d values equally likely."""
    n = p.integer("n", 1, MAX_N)
    places = p.integer("decimalPlaces", 1, MAX_PLACES)
    replacement = p.boolean("replacement", True)
    scale = 10**places
    if not replacement:
        _enough("n", n, scale)

    def make(read: Reader) -> list[float]:
        if replacement:
            return shapes.decimal_fractions(read, n, places)
        return [round(k / scale, places) for k in shapes.sample(read, scale, n)]

    if replacement:
        return Draw(8 * n, make, reads=read_bound(integer_reads(n, 0, scale - 1)))
    return Draw(_sample_need(scale, n), make, reads=read_bound(*shapes.sample_reads(scale, n)))


def generate_gaussians(p: Params) -> Draw:
    n = p.integer("n", 1, MAX_N)
    mean = p.number("mean", GAUSSIAN_BOUND)
    deviation = p.number("standardDeviation", GAUSSIAN_BOUND)
    digits = p.integer("significantDigits", MIN_DIGITS, MAX_DIGITS)
    spec = f".{digits - 1}e"  # rounded to significant digits
    return Draw(8 * n, lambda read: [
        float(format(x, spec)) for x in shapes.gaussians(read, n, mean, deviation)
    ])  # fmt: skip


def _characters(p: Params) -> str:
    """1 to 128 characters, none twice (a repeated one would be drawn more often than the
    others) and none a lone UTF-16 surrogate (no UTF-8 text can carry it back)."""
    value = p.get("characters")
    if not isinstance(value, str):
        raise malformed("characters", f"a string is expected, got {kind(value)}")
    if not 1 <= len(value) <= MAX_CHARACTERS:
        raise out_of_range("characters", f"1 to {MAX_CHARACTERS} characters", str(len(value)))
    seen: set[str] = set()
    for char in value:
        if char in seen or "\ud800" <= char <= "\udfff":
            why = "twice" if char in seen else "(a lone surrogate)"
            raise RpcError(
                201,
                f"Parameter 'characters' contains {char!a} {why}; each character may appear once",
                ["characters", char],
            )
        seen.add(char)
    return value


def _nth_string(index: int, length: int, alphabet: str) -> str:
    """The string whose digits in base ``len(alphabet)`` are ``index``: a bijection, so a
    uniform index is a uniform string."""
    size = len(alphabet)
    return "".join(alphabet[index // size**i % size] for i in range(length))


def _distinct_strings(read: Reader, n: int, length: int, alphabet: str) -> list[str]:
    """``n`` distinct strings in a space too large to index: uniform strings, a repeat
    drawn again. Keeping first appearances of an i.i.d. uniform stream picks every ordered
    selection of distinct strings with the same chance."""
    seen: set[str] = set()
    kept: list[str] = []
    while len(kept) < n:
        for value in shapes.strings(read, n - len(kept), length, alphabet):
            if value not in seen:
                seen.add(value)
                kept.append(value)
    return kept


def generate_strings(p: Params) -> Draw:
    n = p.integer("n", 1, MAX_N)
    length = p.integer("length", 1, MAX_STRING_LENGTH)
    alphabet = _characters(p)
    replacement = p.boolean("replacement", True)
    space = len(alphabet) ** length
    chars = shapes.index_reads(n * length, len(alphabet))
    if replacement:
        return Draw(
            n * length,
            lambda read: shapes.strings(read, n, length, alphabet),
            reads=read_bound(chars),
        )
    _enough("n", n, space)
    if space <= _SAMPLE_SPACE:
        return Draw(
            _sample_need(space, n),
            lambda read: [_nth_string(k, length, alphabet) for k in shapes.sample(read, space, n)],
            reads=read_bound(*shapes.sample_reads(space, n)),
        )
    # One string drawn again, for a repeat: in a space of more than 2^63 strings, n <= 10^4
    # of them repeat one with a chance below 2^-37, two (or a repeat again) below 2^-70.
    again = shapes.index_reads(length, len(alphabet))
    return Draw(
        n * length,
        lambda read: _distinct_strings(read, n, length, alphabet),
        reads=read_bound(chars, again),
    )


def generate_uuids(p: Params) -> Draw:
    """RFC 9562 (formerly RFC 4122 section 4.4) version-4 UUIDs: 122 random bits each."""
    n = p.integer("n", 1, MAX_UUIDS)
    return Draw(16 * n, lambda read: derive.uuids(read, n))


def generate_blobs(p: Params) -> Draw:
    """``n`` blobs of ``size`` bits (a multiple of 8), standard padded base64 or lowercase
    hex; all together at most 1,048,576 bits (128 KiB), as RANDOM.ORG limits them."""
    n = p.integer("n", 1, MAX_BLOBS)
    size = p.integer("size", 1, MAX_BLOB_BITS)
    if size % 8:
        raise out_of_range("size", f"multiples of 8 in [8, {MAX_BLOB_BITS}]", str(size))
    if n * size > MAX_BLOB_BITS:
        raise out_of_range("size", f"at most {MAX_BLOB_BITS} bits in all", f"{n * size} in all")
    fmt = p.get("format", "base64")
    if not isinstance(fmt, str):
        raise malformed("format", f"a string is expected, got {kind(fmt)}")
    if fmt not in BLOB_FORMATS:
        raise out_of_range("format", "base64 or hex", ascii(fmt[:20]))
    width = size // 8

    def make(read: Reader) -> list[str]:
        raw = read(n * width)
        blobs = [raw[i : i + width] for i in range(0, n * width, width)]
        if fmt == "hex":
            return [blob.hex() for blob in blobs]
        return [base64.b64encode(blob).decode("ascii") for blob in blobs]

    return Draw(n * width, make, "size")


#: The basic methods that draw, by name.
METHODS: Final[Mapping[str, Callable[[Params], Draw]]] = {
    "generateIntegers": generate_integers,
    "generateIntegerSequences": generate_integer_sequences,
    "generateDecimalFractions": generate_decimal_fractions,
    "generateGaussians": generate_gaussians,
    "generateStrings": generate_strings,
    "generateUUIDs": generate_uuids,
    "generateBlobs": generate_blobs,
}


def prepare(method: str, raw: Mapping[str, Any]) -> Draw:
    """The checked draw of ``method`` (one of :data:`METHODS`). Raises: RpcError."""
    params = Params(raw)
    draw = METHODS[method](params)
    params.done()
    return draw
