"""Routes for more shapes of randomness: gaussians, strings, shuffles, samples, dice and
passwords. Each is uniform by construction (see :mod:`qrng_dd.gateway.shapes`).

Each route is a table entry and a *values* function ``(service, args) -> JSON value``; the
REST handler serves its JSON, and the MCP tools call the same function in process
(:data:`VALUES`), so a shape is computed one way whichever way it leaves.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from qrng_dd.gateway import shapes
from qrng_dd.gateway.api import ENTROPY_ERRORS, Args, Call, Content, Param, Reply, Route
from qrng_dd.gateway.derive import read_bound
from qrng_dd.gateway.problem import bad_parameter

if TYPE_CHECKING:
    from qrng_dd.gateway.service import EntropyService

Values = Callable[["EntropyService", Args], Any]

MAX_COUNT: Final = 1000
MAX_STRING_LENGTH: Final = 1024
#: Most characters one request may ask for: the count times the length.
MAX_CHARACTERS: Final = 65_536
MAX_ITEMS: Final = 1000
#: The longest ``items`` text: 5,000 characters of 4-byte UTF-8 are 60,000 bytes percent-
#: encoded, so the request line stays under the HTTP server's 64 KiB (granian answers a longer
#: one with a bare 414 before the gateway sees it).
MAX_ITEMS_TEXT: Final = 5_000
MAX_DICE: Final = 1000
MAX_SIDES: Final = 1_000_000
MAX_MODIFIER: Final = 1_000_000
MAX_POPULATION: Final = 2**53
#: Mean and standard deviation bounds (RANDOM.ORG's, so both APIs accept the same values).
MAX_MAGNITUDE: Final = 1_000_000
ALPHANUMERIC: Final = string.ascii_letters + string.digits
#: Password alphabets, by name.
CHARSETS: Final = {
    "alphanumeric": ALPHANUMERIC,
    "printable": "".join(c for c in string.printable if c.isprintable() and not c.isspace()),
    "letters": string.ascii_letters,
    "digits": string.digits,
    "hex": "0123456789abcdef",
}


def _count(what: str, default: int = 10) -> Param:
    return Param("count", f"how many {what}, 1 to {MAX_COUNT}", default, 1, MAX_COUNT)


# -- values ---------------------------------------------------------------------------------


def gaussians(service: EntropyService, args: Args) -> list[float]:
    count, mean, stddev = args["count"], args["mean"], args["stddev"]
    return service.derive(lambda read: shapes.gaussians(read, count, mean, stddev))


def strings(service: EntropyService, args: Args) -> list[str]:
    count, length, alphabet = args["count"], args["length"], args["alphabet"]
    return service.derive(lambda read: shapes.strings(read, count, length, alphabet))


def shuffle(service: EntropyService, args: Args) -> list[str]:
    items = args["items"].split(",")
    return service.derive(lambda read: shapes.shuffle(read, items))


def sample(service: EntropyService, args: Args) -> list[int]:
    n, k = args["n"], args["k"]
    return [1 + i for i in service.derive(lambda read: shapes.sample(read, n, k))]


def dice(service: EntropyService, args: Args) -> dict[str, Any]:
    notation = args["notation"]
    count, sides, modifier = _dice(notation)
    rolls = service.derive(lambda read: shapes.dice(read, count, sides))
    return {
        "notation": notation,
        "rolls": rolls,
        "modifier": modifier,
        "total": sum(rolls) + modifier,
    }


def passwords(service: EntropyService, args: Args) -> dict[str, Any]:
    count, length, charset = args["count"], args["length"], args["charset"]
    alphabet = CHARSETS[charset]
    values = service.derive(lambda read: shapes.strings(read, count, length, alphabet))
    bits = round(length * math.log2(len(alphabet)), 1)
    return {"passwords": values, "charset": charset, "entropy_bits": bits}


#: Route name -> its values function (the MCP tools draw through these).
VALUES: Final[dict[str, Values]] = {
    "gaussians": gaussians,
    "strings": strings,
    "shuffle": shuffle,
    "sample": sample,
    "dice": dice,
    "passwords": passwords,
}


def _handler(values: Values) -> Callable[[Call], Reply]:
    def handle(call: Call) -> Reply:
        return Reply.json(values(call.service, call.args))

    return handle


# -- checks across parameters, before anything is charged ---------------------------------


def _check_strings(args: Args) -> None:
    count, length, alphabet = args["count"], args["length"], args["alphabet"]
    if count * length > MAX_CHARACTERS:
        msg = f"'count' times 'length' must be at most {MAX_CHARACTERS}, got {count * length}"
        raise bad_parameter(msg)
    if len(set(alphabet)) != len(alphabet):
        # A repeated character would be drawn more often than the others.
        raise bad_parameter("'alphabet' must not repeat a character")


def _item_count(args: Args) -> int:
    """The items of a shuffle, counted without splitting them."""
    count: int = args["items"].count(",") + 1
    return count


def _check_shuffle(args: Args) -> None:
    items = _item_count(args)
    if items > MAX_ITEMS:
        raise bad_parameter(f"'items' must hold at most {MAX_ITEMS} items, got {items}")


def _check_sample(args: Args) -> None:
    if args["k"] > args["n"]:
        raise bad_parameter(f"'k' ({args['k']}) must not be greater than 'n' ({args['n']})")


def _dice(notation: str) -> tuple[int, int, int]:
    """The notation's dice, sides and modifier. Raises: Problem 400 naming 'notation'."""
    parsed = shapes.parse_dice(notation)
    if parsed is None:
        raise bad_parameter(
            f"'notation' must be dice notation like 3d6 or 1d20+5, got {notation!r}"
        )
    count, sides, modifier = parsed
    if not (1 <= count <= MAX_DICE and 2 <= sides <= MAX_SIDES and abs(modifier) <= MAX_MODIFIER):
        raise bad_parameter(
            f"'notation' must roll 1 to {MAX_DICE} dice of 2 to {MAX_SIDES} sides, with a "
            f"modifier of at most {MAX_MODIFIER}, got {notation!r}"
        )
    return parsed


def _check_dice(args: Args) -> None:
    _dice(args["notation"])


# -- the most bytes each reads (rejection sampling), for the pool's capacity --------------------


def _strings_bound(args: Args) -> int:
    return read_bound(shapes.index_reads(args["count"] * args["length"], len(args["alphabet"])))


def _shuffle_bound(args: Args) -> int:
    items = _item_count(args)
    return read_bound(*shapes.sample_reads(items, items))


def _sample_bound(args: Args) -> int:
    return read_bound(*shapes.sample_reads(args["n"], args["k"]))


def _dice_bound(args: Args) -> int:
    count, sides, _ = _dice(args["notation"])
    return read_bound(shapes.index_reads(count, sides))


def _passwords_bound(args: Args) -> int:
    count, length = args["count"], args["length"]
    return read_bound(shapes.index_reads(count * length, len(CHARSETS[args["charset"]])))


# -- the table entries ----------------------------------------------------------------------

_NUMBERS: Final = {"type": "array", "items": {"type": "number"}}
_TEXTS: Final = {"type": "array", "items": {"type": "string"}}
_OBJECT: Final = {"type": "object"}


def _route(
    name: str,
    summary: str,
    params: tuple[Param, ...],
    cost: Callable[[Args], int],
    schema: dict[str, Any],
    check: Callable[[Args], None] | None = None,
    bound: Callable[[Args], int] | None = None,
) -> Route:
    return Route(
        name,
        f"/api/{name}",
        ("GET",),
        summary,
        _handler(VALUES[name]),
        params=params,
        cost=cost,
        ok=summary,
        content=(Content("application/json", schema),),
        errors=ENTROPY_ERRORS,
        check=check,
        bound=bound,
    )


ROUTES: Final[tuple[Route, ...]] = (
    _route(
        "gaussians",
        "Normal values: mean + stddev * z, z by the inverse normal CDF at a 53-bit uniform",
        (
            _count("values"),
            Param("mean", "the mean", 0, -MAX_MAGNITUDE, MAX_MAGNITUDE, kind="number"),
            Param("stddev", "the standard deviation, >= 0", 1, 0, MAX_MAGNITUDE, kind="number"),
        ),
        lambda args: 8 * args["count"],
        _NUMBERS,
    ),
    _route(
        "strings",
        "Strings, each character uniform over the alphabet (rejection sampling, no bias)",
        (
            _count("strings"),
            Param(
                "length",
                f"characters per string, 1 to {MAX_STRING_LENGTH}",
                16,
                1,
                MAX_STRING_LENGTH,
            ),
            Param(
                "alphabet",
                "the characters to draw from, 1 to 256, none repeated",
                ALPHANUMERIC,
                1,
                256,
                kind="text",
            ),
        ),
        lambda args: args["count"] * args["length"],
        _TEXTS,
        _check_strings,
        _strings_bound,
    ),
    _route(
        "shuffle",
        "The items in a uniformly random order (Fisher-Yates)",
        (
            Param(
                "items",
                f"comma-separated items to shuffle, at most {MAX_ITEMS}",
                None,
                1,
                MAX_ITEMS_TEXT,
                kind="text",
            ),
        ),
        lambda args: 8 * _item_count(args),
        _TEXTS,
        _check_shuffle,
        _shuffle_bound,
    ),
    _route(
        "sample",
        "k distinct integers of 1..n, in random order (a lottery draw)",
        (
            Param("n", "the population, 1..n", None, 1, MAX_POPULATION),
            Param("k", f"how many to pick, at most n and {MAX_COUNT}", 1, 1, MAX_COUNT),
        ),
        lambda args: 8 * args["k"],
        {"type": "array", "items": {"type": "integer"}},
        _check_sample,
        _sample_bound,
    ),
    _route(
        "dice",
        "Dice rolls in dice notation (3d6, 1d20+5), each die fair",
        (Param("notation", "dice notation: NdS, NdS+K or NdS-K", "1d6", 1, 32, kind="text"),),
        lambda args: 8 * _dice(args["notation"])[0],
        _OBJECT,
        _check_dice,
        _dice_bound,
    ),
    _route(
        "passwords",
        "Passwords, each character uniform over the charset; entropy_bits says how strong",
        (
            Param("count", "how many passwords, 1 to 100", 1, 1, 100),
            Param("length", "characters per password, 8 to 128", 20, 8, 128),
            Param("charset", ", ".join(CHARSETS), "alphanumeric", choices=tuple(CHARSETS)),
        ),
        lambda args: args["count"] * args["length"],
        _OBJECT,
        bound=_passwords_bound,
    ),
)
