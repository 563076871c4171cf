"""Mixing: the xor of several sources' batches."""

from __future__ import annotations

import os

import pytest

from qrng_dd.collector.mixing import mix


@pytest.mark.parametrize("sources", [2, 3, 5])
def test_xor_mix_is_the_bytewise_xor_of_the_shortest_length(sources: int) -> None:
    batches = [os.urandom(1000 + 7 * i) for i in range(sources)]
    expected = bytearray(batches[0][:1000])
    for batch in batches[1:]:
        for i in range(1000):
            expected[i] ^= batch[i]
    assert mix(batches, "xor") == bytes(expected)
    assert mix([b"", b"abc"], "xor") == b""
