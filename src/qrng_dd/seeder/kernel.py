"""The kernel's side of ``qrng-dd seed``: mixing with local entropy and the ``RNDADDENTROPY``
ioctl on ``/dev/random``."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self

from qrng_dd.errors import QrngError


def _iow(kind: str, number: int, size: int) -> int:
    """Linux ``_IOW(type, nr, size)`` (include/uapi/asm-generic/ioctl.h): direction bits 30-31
    (1 = write, user to kernel), size bits 16-29, type bits 8-15, number bits 0-7."""
    return (1 << 30) | (size << 16) | (ord(kind) << 8) | number


#: ``RNDADDENTROPY = _IOW('R', 0x03, int[2])`` (include/uapi/linux/random.h): the header of
#: ``struct rand_pool_info`` (entropy_count, buf_size) is two ints, 8 bytes. = 0x40085203.
RNDADDENTROPY: Final = _iow("R", 0x03, struct.calcsize("ii"))


class DeviceError(QrngError):
    """The entropy device could not be opened or refused ``RNDADDENTROPY``; one line."""


def mix(quantum: bytes, local: bytes) -> bytes:
    """``quantum`` XOR ``local``, byte by byte.

    XOR of two independent inputs is at least as unpredictable as the better of them: a
    gateway that sends known bytes cannot make the result guessable while the local bytes are
    not, and local bytes that are weak (early boot) are fixed by good quantum ones. The kernel
    mixes the result into its pool with BLAKE2s anyway; the XOR costs nothing and means no
    single outside party ever chooses the exact bytes we add.

    Raises:
        ValueError: the lengths differ.
    """
    if len(quantum) != len(local):
        msg = f"cannot mix {len(quantum)} bytes with {len(local)}"
        raise ValueError(msg)
    return (int.from_bytes(quantum) ^ int.from_bytes(local)).to_bytes(len(quantum))


def entropy_request(data: bytes, credit_bits: int) -> bytearray:
    """The ``struct rand_pool_info`` that ``RNDADDENTROPY`` reads: entropy_count, buf_size,
    then the bytes.

    A ``bytearray``, not ``bytes``: ``fcntl.ioctl`` copies an immutable argument into a 1024-byte
    buffer and refuses anything longer, but passes a mutable one through at any size.
    """
    return bytearray(struct.pack("ii", credit_bits, len(data)) + data)


class EntropySink(Protocol):
    """Where a :class:`Seeder` puts mixed bytes: an :class:`EntropyDevice`, or a test's fake."""

    path: Path

    def add(self, data: bytes, credit_bits: int) -> None: ...


class EntropyDevice:
    """An open ``/dev/random`` that takes ``RNDADDENTROPY``. Use ``with``."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` and add nothing to it, which checks the device and the privilege.

        Raises:
            DeviceError: it cannot be opened, or it refused the ioctl.
        """
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            msg = f"cannot open {path} for writing: {err.strerror}"
            raise DeviceError(msg) from err
        try:
            self.add(b"", 0)
        except DeviceError:
            os.close(self._fd)
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.close(self._fd)

    def add(self, data: bytes, credit_bits: int) -> None:
        """Mix ``data`` into the kernel's pool and credit ``credit_bits``.

        Raises:
            DeviceError: the kernel refused (no ``CAP_SYS_ADMIN``, not a random device).
        """
        try:
            fcntl.ioctl(self._fd, RNDADDENTROPY, entropy_request(data, credit_bits))
        except OSError as err:
            raise DeviceError(_refusal(self.path, err)) from err


def _refusal(path: Path, err: OSError) -> str:
    if err.errno == errno.EPERM:
        return (
            f"{path} refused RNDADDENTROPY (EPERM): adding entropy needs CAP_SYS_ADMIN;"
            " run as root or with that capability"
        )
    if err.errno in (errno.ENOTTY, errno.EINVAL):
        return f"{path} refused RNDADDENTROPY: it is not a random device (use /dev/random)"
    return f"{path} refused RNDADDENTROPY: {err.strerror}"
