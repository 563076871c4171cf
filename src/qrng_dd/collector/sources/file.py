"""A local file or device (``file:///dev/hwrng``) as an entropy source.

Reads run in a worker thread: a hardware RNG device blocks until it has bytes, and the event
loop must not. A short read is an error, never padded (P4).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import anyio

from qrng_dd.collector.sources.base import SourceError


class FileSource:
    """Reads ``n`` bytes per fetch from a file or character device."""

    def __init__(self, url: str) -> None:
        self.path = unquote(urlsplit(url).path)
        self.name = self.path

    def _read(self, n: int) -> bytes:
        with open(self.path, "rb", buffering=0) as f:
            parts: list[bytes] = []
            got = 0
            while got < n:
                chunk = f.read(n - got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        return b"".join(parts)

    async def fetch(self, n: int) -> bytes:
        try:
            data = await anyio.to_thread.run_sync(self._read, n)
        except OSError as err:
            raise SourceError(f"{self.path}: {err.strerror or err}") from err
        if len(data) != n:
            raise SourceError(f"{self.path}: short read, {len(data)} of {n} bytes")
        return data
