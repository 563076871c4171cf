"""ANU QRNG-compatible routes: the legacy ``/API/jsonI.php`` and the AQN API.

Programs written for the Australian National University's quantum random numbers keep
working against a gateway with only their base URL changed, and draw from the same pool,
under the same keys, limits and byte charges as the rest of the API (each route's ``cost``):

* **Legacy** (``qrng.anu.edu.au/API/jsonI.php``, retired by ANU, still what ``quantumrandom``
  speaks): ``GET /API/jsonI.php?length=N&type=T&size=S``, ``T`` one of ``uint8``,
  ``uint16``, ``hex16``, answered ``{"type", "length", "data", "success"}``. ``hex16`` is
  ANU's name for hex *strings*: each item is ``size`` bytes as ``2 * size`` lowercase hex
  digits, and the answer says ``"type": "string"`` and carries ``"size"``, as ANU's did.
  ``quantumrandom`` asserts ``length`` is the integer it asked for.
* **AQN** (``api.quantumnumbers.anu.edu.au``, what ``quantum-random``/``qrandom`` speaks):
  ``GET {QRNG_ANU_PREFIX}/?length=N&type=T&size=S``, ``T`` one of ``uint8``, ``uint16``,
  ``hex8``, ``hex16``, answered ``{"success", "type", "length", "data"}`` with ``length``
  a *string*, as AQN sends it. There ``size`` counts blocks: ``hex8`` items are ``size``
  bytes, ``hex16`` items ``2 * size`` bytes (``qrandom`` asks ``hex16`` with size 4 and
  divides by 2^64). AQN clients send their key as ``x-api-key``, which the policy accepts.

``uint16`` values are two pool bytes read big-endian (any fixed order is uniform). Every
value is the pool's bytes reshaped, never reduced, so each is uniform over its range.

A bad ``length``, ``type`` or ``size`` is the front's usual 400 problem naming it, before
anything is charged or drawn. ``qrandom`` raises ``requests.HTTPError`` on any non-200 and
appends the problem document it parses as JSON; ``quantumrandom``'s ``urlopen`` raises
``HTTPError``. Neither ever sees ``"success": false`` from here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from qrng_dd.gateway.api import ENTROPY_ERRORS, JSON, Args, Call, Content, Param, Reply, Route

if TYPE_CHECKING:
    from qrng_dd.config import GatewaySettings

LEGACY_PATH: Final = "/API/jsonI.php"
MAX_LENGTH: Final = 1024
#: Largest ``size``: the legacy API's 1024 bytes per hex string, AQN's 10 blocks.
MAX_LEGACY_SIZE: Final = 1024
MAX_AQN_SIZE: Final = 10
LEGACY_TYPES: Final = ("uint8", "uint16", "hex16")
AQN_TYPES: Final = ("uint8", "uint16", "hex8", "hex16")

#: Bytes in one ``size`` unit of a hex type: legacy ``hex16`` counts bytes, AQN counts its
#: 8- and 16-bit blocks.
_LEGACY_BLOCK: Final = {"hex16": 1}
_AQN_BLOCK: Final = {"hex8": 1, "hex16": 2}


def _width(kind: str, size: int, blocks: dict[str, int]) -> int:
    """Pool bytes behind one item of ``kind``."""
    if kind == "uint8":
        return 1
    if kind == "uint16":
        return 2
    return blocks[kind] * size


def _cost(blocks: dict[str, int]) -> Callable[[Args], int]:
    def cost(args: Args) -> int:
        length: int = args["length"]
        return _width(args["type"], args["size"], blocks) * length

    return cost


def _draw(call: Call, blocks: dict[str, int]) -> list[int] | list[str]:
    """The items asked for, from one take of ``length * width`` pool bytes.

    Raises:
        EntropyExhaustedError: the pool holds too little now (a request it can never hold
            is the front's 400, before anything is charged).
    """
    kind, length, size = call.args["type"], call.args["length"], call.args["size"]
    width = _width(kind, size, blocks)
    raw = call.service.take(length * width)
    if kind == "uint8":
        return list(raw)
    if kind == "uint16":
        return list(struct.unpack(f">{length}H", raw))
    return [raw[i : i + width].hex() for i in range(0, len(raw), width)]


def legacy(call: Call) -> Reply:
    """``/API/jsonI.php``: the shape ``quantumrandom`` (and ANU's old service) has."""
    data = _draw(call, _LEGACY_BLOCK)
    kind = call.args["type"]
    body: dict[str, Any] = {"type": "string" if kind == "hex16" else kind}
    body["length"] = call.args["length"]
    if kind == "hex16":
        body["size"] = call.args["size"]
    body["data"] = data
    body["success"] = True
    return Reply.json(body)


def aqn(call: Call) -> Reply:
    """The AQN API: the shape ``qrandom`` (and ANU Quantum Numbers) has, ``length`` a string."""
    data = _draw(call, _AQN_BLOCK)
    args = call.args
    return Reply.json(
        {"success": True, "type": args["type"], "length": str(args["length"]), "data": data}
    )


def _params(types: tuple[str, ...], max_size: int, size_text: str) -> tuple[Param, ...]:
    return (
        Param("length", f"how many items, 1 to {MAX_LENGTH}", None, 1, MAX_LENGTH),
        Param("type", ", ".join(types), "uint8", choices=types),
        Param("size", size_text, 1, 1, max_size),
    )


def _schema(length: dict[str, Any]) -> dict[str, Any]:
    item = {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 65535},
                      {"type": "string", "pattern": "^[0-9a-f]+$"}]}  # fmt: skip
    return {
        "type": "object",
        "required": ["success", "type", "length", "data"],
        "properties": {
            "success": {"type": "boolean", "const": True},
            "type": {"type": "string"},
            "length": length,
            "size": {"type": "integer"},
            "data": {"type": "array", "items": item},
        },
    }


def _aqn_prefix(settings: GatewaySettings) -> str:
    return settings.anu_prefix


ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "anu_legacy",
        LEGACY_PATH,
        ("GET",),
        "ANU QRNG legacy JSON API (quantumrandom): uint8, uint16, or hex16 strings",
        legacy,
        params=_params(
            LEGACY_TYPES,
            MAX_LEGACY_SIZE,
            f"hex16 only: bytes per string (2 hex digits each), 1 to {MAX_LEGACY_SIZE}",
        ),
        cost=_cost(_LEGACY_BLOCK),
        ok='{"type", "length", "data", "success"}; hex16 answers "type": "string" and "size"',
        content=(Content(JSON, _schema({"type": "integer"})),),
        errors=ENTROPY_ERRORS,
    ),
    Route(
        "anu",
        "/",
        ("GET",),
        "ANU Quantum Numbers (AQN) API (qrandom), key also as x-api-key; at QRNG_ANU_PREFIX",
        aqn,
        params=_params(
            AQN_TYPES,
            MAX_AQN_SIZE,
            f"hex8/hex16 only: 8- or 16-bit blocks per string, 1 to {MAX_AQN_SIZE}",
        ),
        cost=_cost(_AQN_BLOCK),
        ok='{"success", "type", "length" (a string, as AQN sends it), "data"}',
        content=(Content(JSON, _schema({"type": "string", "pattern": "^[0-9]+$"})),),
        errors=ENTROPY_ERRORS,
        prefix=_aqn_prefix,
    ),
)
