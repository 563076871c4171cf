"""Shared fixtures: a fixed key, a packet factory, the anyio backend."""

from __future__ import annotations

import os

import pytest

from qrng_dd.wire.packet import Packet, PacketKey

KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def key() -> PacketKey:
    return PacketKey.from_hex(KEY_HEX)


def make_packet(
    data: bytes = b"\x01" * 64,
    *,
    seq: int = 1,
    ts_us: int = 1_764_201_600_000_000,
    source: str = "collector",
    dest: str = "gateway",
    flags: int = 1,
) -> Packet:
    """A packet with a fresh random id and the given fields."""
    return Packet(os.urandom(16), flags, source, dest, seq, ts_us, data)
