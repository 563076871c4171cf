"""What every entropy source offers the collector."""

from __future__ import annotations

from typing import Protocol

from qrng_dd.errors import QrngError


class SourceError(QrngError):
    """A fetch failed: the source answered wrongly, not at all, or with too few bytes."""


class Source(Protocol):
    """An appliance or device that hands out random bytes."""

    #: Stable label for status, metrics and logs (host:port or the file path).
    name: str

    async def fetch(self, n: int) -> bytes:
        """Exactly ``n`` bytes. Raises: SourceError."""
        ...
