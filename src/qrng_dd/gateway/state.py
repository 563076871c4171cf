"""The gateway's durable memory of accepted sequence numbers (``QRNG_STATE_DIR``), P3.

Why it exists: the verifier refuses a replayed packet because its ``seq`` is not above the
last one accepted from its source. That memory lives in RAM; without it, a gateway that
restarts (or crashes) within a packet's TTL would accept again a packet the previous instance
already pooled and served. This file keeps, per source, the highest ``seq`` accepted (data and
telemetry streams apart) and its timestamp, and nothing else: never a byte of entropy (P6).

Writes are atomic: a temporary file in the same directory, ``fsync``, ``os.replace``, then an
``fsync`` of the directory, so after a crash the file is either the old state or the new one,
never a torn mix. The directory is locked (``flock``) for the life of the gateway, so two
gateways can never share (and overwrite) one state.

Group commit lives in :class:`StateJournal`: many accepted packets wait on one write, and
their bytes join the pool only once it is on disk, so what was served is always remembered.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from qrng_dd.errors import ConfigError
from qrng_dd.gateway.verifier import SourceMark

STATE_FILE: Final = "gateway-state.json"
LOCK_FILE: Final = "gateway-state.lock"
FORMAT: Final = 1
_VAR: Final = "QRNG_STATE_DIR"


Marks = Mapping[str, SourceMark]


class StateDir:
    """The state directory of one gateway: locked, readable, atomically rewritten."""

    def __init__(self, directory: Path, gateway_id: str) -> None:
        """Open (creating it if needed) and lock ``directory``.

        Raises:
            ConfigError: one line naming ``QRNG_STATE_DIR`` (not a directory, not writable,
                locked by another gateway).
        """
        self.directory = directory
        self.gateway_id = gateway_id
        self.path = directory / STATE_FILE
        try:
            directory.mkdir(mode=0o700, parents=False, exist_ok=True)
            if not directory.is_dir():
                raise NotADirectoryError(f"{directory} is not a directory")
            self._lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise ConfigError(f"{_VAR}: cannot use {directory}: {_reason(err)}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            msg = f"{_VAR}: {directory} is in use by another gateway (locked)"
            raise ConfigError(msg) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            self.close()
            raise ConfigError(f"{_VAR}: {directory} is not writable")

    def load(self) -> dict[str, SourceMark] | None:
        """The saved marks, or ``None`` when this directory has never held a state.

        Raises:
            ConfigError: the file is unreadable, corrupt or belongs to another gateway id;
                the gateway refuses to start rather than forget what it served.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{_VAR}: cannot read {self.path}: {_reason(err)}") from None
        try:
            document = json.loads(text)
            return _parse(document, self.gateway_id)
        except (ValueError, TypeError, KeyError) as err:
            msg = f"{_VAR}: {self.path} is not a valid gateway state ({err}); refusing to start"
            raise ConfigError(msg) from None

    def save(self, marks: Marks) -> None:
        """Write ``marks`` atomically and durably. Raises: OSError."""
        document = {
            "format": FORMAT,
            "gateway_id": self.gateway_id,
            "sources": {
                name: {"seq": m.seq, "ts_us": m.ts_us, "telemetry_seq": m.telemetry_seq}
                for name, m in marks.items()
            },
        }
        data = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        tmp = self.directory / f".{STATE_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        """Release the lock (the process exiting releases it too)."""
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def _parse(document: Any, gateway_id: str) -> dict[str, SourceMark]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"expected format {FORMAT}")
    if document.get("gateway_id") != gateway_id:
        raise ValueError(f"written by gateway {document.get('gateway_id')!r}, not {gateway_id!r}")
    sources = document["sources"]
    if not isinstance(sources, dict):
        raise TypeError("sources must be a mapping")
    marks: dict[str, SourceMark] = {}
    for name, entry in sources.items():
        values = [entry["seq"], entry["ts_us"], entry.get("telemetry_seq", 0)]
        if not all(type(v) is int and 0 <= v < 2**64 for v in values):
            raise ValueError(f"source {name!r}: seq and ts_us must be uint64")
        marks[str(name)] = SourceMark(*values)
    return marks


def _reason(err: OSError | UnicodeDecodeError) -> str:
    return (err.strerror if isinstance(err, OSError) else None) or str(err)


@dataclass(slots=True)
class _Write:
    """One write in progress: the generation it covers and, once done, how it went."""

    generation: int
    done: anyio.Event
    error: OSError | None = None


class StateJournal:
    """Group commit of the verifier's marks: one write covers every packet accepted before it.

    :meth:`changed` is called (synchronously, on the event loop) each time the verifier
    records a packet; :meth:`durable` waits until a write that includes that change has
    reached the disk. While one write runs in a worker thread, the packets accepted meanwhile
    wait for the next, so under load one ``fsync`` serves many packets and ingest speed holds.

    A failed write is raised to every waiter it covered (their bytes are then dropped, not
    pooled: a byte is served only once what refuses its replay is on disk).
    """

    def __init__(self, store: StateDir, snapshot: Callable[[], Marks]) -> None:
        self._store = store
        self._snapshot = snapshot
        self._changed = 0  # generation of the newest change
        self._durable = 0  # newest generation a successful write included
        self._current: _Write | None = None
        self.writes = 0
        self.failures = 0

    def changed(self) -> int:
        """Note a change of the marks; returns its generation for :meth:`durable`."""
        self._changed += 1
        return self._changed

    async def durable(self, generation: int) -> None:
        """Return once ``generation`` is on disk. Raises: OSError (the write failed)."""
        while self._durable < generation:
            write = self._current
            if write is None:
                await self._write()
                continue
            await write.done.wait()
            if write.error is not None and write.generation >= generation:
                raise write.error

    async def flush(self) -> None:
        """Write whatever changed since the last write (at shutdown). Raises: OSError."""
        await self.durable(self._changed)

    async def _write(self) -> None:
        # Snapshot and generation are read together, on the loop: the write covers exactly
        # the changes made before it started.
        write = self._current = _Write(self._changed, anyio.Event())
        marks = dict(self._snapshot())
        try:
            await anyio.to_thread.run_sync(self._store.save, marks)
        except OSError as err:
            write.error = err
            self.failures += 1
        finally:
            self._current = None
            self.writes += 1
            if write.error is None:
                self._durable = max(self._durable, write.generation)
            write.done.set()
        if write.error is not None:
            raise write.error
