"""Addresses in the configuration: push targets (``[id=]scheme://host:port/path``) and
``host:port``. Pure parsing, shared by the settings and the collector's transports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from qrng_dd.wire.packet import valid_id

__all__ = ["PushTarget", "parse_host_port", "parse_push_target"]


@dataclass(frozen=True, slots=True)
class PushTarget:
    """One entry of ``QRNG_GATEWAY_PUSH_URL``: the gateway id and where to reach it."""

    gateway_id: str
    url: str
    scheme: Literal["http", "https", "udp"]
    host: str
    port: int


def parse_push_target(text: str) -> PushTarget:
    """Parse ``[id=]https://host:7764/push`` or ``[id=]udp://host:port``.

    Raises:
        ValueError: the entry is malformed.
    """
    gateway_id, sep, url = text.partition("=")
    if not sep:
        gateway_id, url = "gateway", text
    if not valid_id(gateway_id):
        msg = f"gateway id {gateway_id!r} must be 1-64 characters of [A-Za-z0-9._-]"
        raise ValueError(msg)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
        host = None
    else:
        host = parts.hostname
    if parts.scheme not in ("http", "https", "udp") or not host:
        msg = f"{url!r} is not an http(s)://host[:port]/path or udp://host:port URL"
        raise ValueError(msg)
    if parts.scheme == "udp" and port is None:
        msg = f"{url!r} needs a port"
        raise ValueError(msg)
    default = 443 if parts.scheme == "https" else 80
    return PushTarget(gateway_id, url, parts.scheme, host, port or default)  # type: ignore[arg-type]


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = f"{text!r} is not host:port"
        raise ValueError(msg)
    return host.strip("[]"), int(port)
