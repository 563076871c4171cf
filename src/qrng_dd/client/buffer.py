"""A prefetching buffer of gateway bytes, refilled in the background, each byte given once.

The drop-ins (:class:`~qrng_dd.client.stdlib.QuantumRandom`, the numpy generator) draw many
small amounts: one HTTP request per ``random()`` would cost a round trip each. The buffer holds
up to ``size`` bytes; when a draw leaves fewer than ``low_watermark``, a background thread asks
the gateway for more while draws go on from what is left. A draw larger than what is held waits
for the refill (or fetches directly when larger than the buffer itself).

Bytes leave the buffer under a lock and are cut out of it as they go: two threads never get the
same byte, and nothing is ever handed out twice. When the gateway fails, the draw that needed the
bytes raises the client's error; there is no pseudo-random fallback.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Final

from qrng_dd.client.protocol import ClientError
from qrng_dd.client.sync import Client

DEFAULT_SIZE: Final = 65_536


class EntropyBuffer:
    """Bytes fetched ahead from a gateway.

    Args:
        client: where the bytes come from; the buffer does not close it.
        size: the most it holds (default 64 KiB).
        low_watermark: refill when it holds less than this (default a quarter of ``size``).
    """

    def __init__(
        self, client: Client, size: int = DEFAULT_SIZE, low_watermark: int | None = None
    ) -> None:
        if size < 1:
            msg = f"size must be at least 1, got {size}"
            raise ValueError(msg)
        low = size // 4 if low_watermark is None else low_watermark
        if not 0 <= low <= size:
            msg = f"low_watermark must be in [0, size={size}], got {low}"
            raise ValueError(msg)
        self.client = client
        self.size = size
        self.low_watermark = low
        self._held = bytearray()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._refilling = False
        self._refill_thread: threading.Thread | None = None
        self._error: ClientError | None = None
        self._closed = False
        #: Bytes given out, and bytes the gateway served to this buffer (the difference was
        #: held, or dropped at close).
        self.bytes_drawn = 0
        self.bytes_fetched = 0

    def __enter__(self) -> EntropyBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop refilling (waiting for a refill under way); bytes held are dropped, never
        handed out."""
        with self._changed:
            self._closed = True
            self._held.clear()
            self._changed.notify_all()
            refill = self._refill_thread
        if refill is not None:
            refill.join()

    @property
    def available(self) -> int:
        with self._lock:
            return len(self._held)

    def take(self, count: int) -> bytes:
        """``count`` bytes no one else got.

        Raises:
            ClientError: the gateway could not supply them (after the client's own waits).
            ValueError: ``count`` is negative, or the buffer is closed.
        """
        if count < 0:
            msg = f"count must be >= 0, got {count}"
            raise ValueError(msg)
        if count > self.size:
            # Bigger than the buffer: straight from the gateway, and the held bytes stay.
            data = self.client.random_bytes(count)
            with self._lock:
                self.bytes_fetched += count
                self.bytes_drawn += count
            return data
        with self._changed:
            while len(self._held) < count:
                self._raise_if_done()
                self._start_refill()
                self._changed.wait()
            data = bytes(self._held[:count])
            del self._held[:count]
            self.bytes_drawn += count
            if len(self._held) < self.low_watermark:
                self._start_refill()
        return data

    def _raise_if_done(self) -> None:
        if self._closed:
            msg = "the entropy buffer is closed"
            raise ValueError(msg)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _start_refill(self) -> None:
        """Start one background refill unless one is running (call with the lock held)."""
        if self._refilling or self._closed:
            return
        self._refilling = True
        self._refill_thread = threading.Thread(
            target=self._refill, name="qrng-buffer-refill", daemon=True
        )
        self._refill_thread.start()

    def _refill(self) -> None:
        with self._lock:
            wanted = self.size - len(self._held)
        data, error = b"", None
        if wanted > 0:
            try:
                data = self.client.random_bytes(wanted)
            except ClientError as err:
                error = err
            except Exception as err:  # a waiting draw must hear of it, not hang
                error = ClientError(f"refilling the entropy buffer failed: {err!r}")
        with self._changed:
            self._refilling = False
            self.bytes_fetched += len(data)
            if not self._closed:
                self._held += data
            self._error = error
            self._changed.notify_all()
