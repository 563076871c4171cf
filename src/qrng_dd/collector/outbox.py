"""The bytes waiting for each push target, and how a mixed batch picks one. Pure, no clock.

Theory of operation (DESIGN §6):

- **Split fan-out.** Each mixed batch goes *whole* to one target's :class:`Outbox`, the one
  with the most room, so with several gateways each gets different bytes, never the same ones.
  Ties go round-robin, so equally empty outboxes take turns.
- **Bounded.** The outboxes share ``QRNG_COLLECTOR_BUFFER_SIZE`` equally (at least 1 KiB each):
  a gateway that stops taking bytes holds at most its share of the collector's memory. When
  even the roomiest outbox cannot take a batch, the batch is dropped, never split or queued
  twice; the caller counts it (``buffer_full``).
- An outbox hands its bytes out in order, in pieces of the size the transport wants; what a
  piece becomes (delivered, refused, expired) is the push side's business.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The smallest share one target gets, however many targets split the buffer.
MIN_SHARE_BYTES = 1024


class Outbox:
    """The bytes waiting for one target, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def free(self) -> int:
        """How many more bytes fit."""
        return self.capacity - len(self._data)

    def add(self, chunk: bytes) -> None:
        """Queue ``chunk`` behind what is waiting (the caller checked :attr:`free`)."""
        self._data += chunk

    def take(self, n: int) -> bytes:
        """The oldest ``n`` bytes (fewer if fewer wait), removed."""
        chunk = bytes(self._data[:n])
        del self._data[:n]
        return chunk


class FanOut:
    """One outbox per target, sharing one budget; :meth:`distribute` picks the outbox."""

    def __init__(self, targets: Sequence[str], budget: int) -> None:
        """
        Args:
            targets: the gateway ids, in configuration order.
            budget: ``QRNG_COLLECTOR_BUFFER_SIZE``, split equally between them.
        """
        share = max(MIN_SHARE_BYTES, budget // len(targets))
        self.boxes = {gateway_id: Outbox(share) for gateway_id in targets}
        self._turn = 0

    def __getitem__(self, gateway_id: str) -> Outbox:
        return self.boxes[gateway_id]

    @property
    def buffered(self) -> int:
        """Bytes waiting in all outboxes together."""
        return sum(len(box) for box in self.boxes.values())

    def distribute(self, output: bytes) -> str | None:
        """Give ``output`` whole to the outbox with the most room.

        Returns:
            The id of the target that got it; None if ``output`` is empty or no outbox has
            room for all of it (then it is dropped: the caller counts ``len(output)``).
        """
        if not output:
            return None
        ids = list(self.boxes)
        self._turn = (self._turn + 1) % len(ids)
        rotated = ids[self._turn :] + ids[: self._turn]  # ties go round-robin
        best = max(rotated, key=lambda gateway_id: self.boxes[gateway_id].free)
        if self.boxes[best].free < len(output):
            return None
        self.boxes[best].add(output)
        return best
