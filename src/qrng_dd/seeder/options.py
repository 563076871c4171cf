"""Options of ``qrng-dd seed``, checked without I/O: counts, interval, credit, the gateway URL
(cleartext only on loopback) and the API key (never echoed)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from qrng_dd.errors import ConfigError

#: Most bytes per addition. Since Linux 5.17 the kernel hashes what it is given into a 256-bit
#: input pool (BLAKE2s), so far fewer bytes already do all they can; the cap keeps one draw
#: cheap for the gateway's pool and one ioctl short.
MAX_BYTES: Final = 4096
#: Longest interval: seeding less than daily is pointless, and ``Event.wait`` refuses
#: timeouts beyond ``threading.TIMEOUT_MAX``.
MAX_INTERVAL_S: Final = 86_400.0


_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost."})


@dataclass(frozen=True, slots=True)
class SeedOptions:
    """Checked settings of one ``qrng-dd seed`` run."""

    url: str
    api_key: str = field(repr=False)
    count: int = 64
    interval_s: float = 300.0
    once: bool = False
    credit_bits: int = 0
    device: Path = Path("/dev/random")
    textfile: Path | None = None
    #: PEM bundle of the CA that signed a private gateway's certificate; None: the system's.
    ca_file: Path | None = None
    log_format: str = "json"


def parse_count(text: str) -> int:
    """``--bytes``: a whole number in ``1..MAX_BYTES``.

    Raises:
        ConfigError: anything else.
    """
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_BYTES:
        msg = f"--bytes must be a whole number in 1..{MAX_BYTES}, not {text!r}"
        raise ConfigError(msg)
    return count


def parse_interval(text: str) -> float:
    """``--interval``: seconds, finite, above 0 and at most :data:`MAX_INTERVAL_S`.

    Raises:
        ConfigError: anything else (``0``, ``-1``, ``nan``, ``inf``, ``abc``).
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_INTERVAL_S):
        msg = f"--interval must be seconds above 0 and at most {MAX_INTERVAL_S:g}, not {text!r}"
        raise ConfigError(msg)
    return seconds


def parse_credit(text: str, count: int) -> int:
    """``--credit-bits``: ``0..8 * count``; no byte can carry more than 8 bits of entropy.

    Raises:
        ConfigError: anything else.
    """
    try:
        bits = int(text)
    except ValueError:
        bits = -1
    if not 0 <= bits <= 8 * count:
        msg = f"--credit-bits must be a whole number in 0..{8 * count} (8 * --bytes), not {text!r}"
        raise ConfigError(msg)
    return bits


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost``, 127.0.0.0/8 or ::1."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_url(url: str, *, allow_insecure_http: bool) -> str:
    """The gateway URL without a trailing ``/``, if it is safe to take key material from.

    Raises:
        ConfigError: not an http(s) URL, or ``http://`` to another host without
            ``allow_insecure_http``.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number in 0..65535 raises here
    except ValueError as err:
        msg = f"gateway URL {url!r} is not a valid URL: {err}"
        raise ConfigError(msg) from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"gateway URL {url!r} is not an http(s):// URL"
        raise ConfigError(msg)
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        msg = (
            f"gateway URL {url!r} sends the API key and the bytes in clear text off this host;"
            " use https:// or pass --allow-insecure-http"
        )
        raise ConfigError(msg)
    return url.rstrip("/")


def check_api_key(key: str, origin: str) -> str:
    """``key`` without surrounding whitespace, if it can go in an HTTP header.

    The message names where the key came from, never the key.

    Raises:
        ConfigError: empty, or holding whitespace or non-printable/non-ASCII characters.
    """
    key = key.strip()
    if not key:
        msg = f"{origin} is empty"
        raise ConfigError(msg)
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        msg = f"{origin} must hold one API key: printable ASCII, no spaces or line breaks"
        raise ConfigError(msg)
    return key
