"""One exception tree for the whole package.

::

    QrngError
    ├── PacketError            a packet was refused; ``reason`` is its metric label (DESIGN §3)
    ├── PoolFullError          valid packet, but no room under ``discard``; not consumed (507)
    ├── EntropyExhaustedError  the pool holds fewer bytes than asked (P4: 503, never padding)
    ├── StateError             the state directory could not be written; bytes not pooled (503)
    └── ConfigError            invalid configuration; ``str()`` is one line for the operator

Local faults (a caller asked for something impossible) and remote faults (a peer sent
something we refuse) are kept apart: ``PacketError`` is always about bytes that came from
the network, the others about this process's own state or settings.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

RejectReason = Literal[
    "oversize",
    "malformed",
    "bad_mac",
    "wrong_dest",
    "bad_crc",
    "stale",
    "future",
    "replay",
    "decrypt",
]

#: Every refusal label, in the order the gateway checks them (DESIGN §3).
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)


class QrngError(Exception):
    """Base of every error this package raises on purpose."""


class PacketError(QrngError):
    """A packet was refused; ``reason`` is the label it is counted under."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


class PoolFullError(QrngError):
    """The pool has no room under ``discard``: the packet was verified but not consumed."""


class EntropyExhaustedError(QrngError):
    """The pool cannot supply the bytes asked for; nothing was taken."""

    def __init__(self, requested: int, available: int) -> None:
        super().__init__(f"asked for {requested} bytes, {available} available")
        self.requested = requested
        self.available = available


class StateError(QrngError):
    """The accepted ``seq`` could not be made durable: the packet's bytes were dropped."""


class ConfigError(QrngError):
    """Invalid configuration; the message is a single line naming the variable."""
